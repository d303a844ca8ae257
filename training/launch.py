"""``launcher: accelerate``: each round runs as several processes (multi-GPU, DeepSpeed, multi-CPU).

The orchestrator (rounds, re-scoring, manifests) stays one process; only the round's training is
handed to a launcher, which starts one worker (``tapir.training.worker``) per device from the
recipe's accelerate config. The launcher's output (every rank's, and its own) goes to the round's
``launch.log``; the console shows the main rank's steps as they reach ``train_log.jsonl``, and a
failed round ends with one line naming the rank that died and how.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from tapir.errors import IncompleteRunError, TrainingError
from tapir.manifest import write_json
from tapir.recipe import Recipe
from tapir.scratch import process_alive
from tapir.serving.engines import free_port
from tapir.training.progress import read_log
from tapir.training.sft import LOG_FILE, RoundSpec, last_checkpoint

#: Machine 0 rewrites machines.json this often while it runs; a follower takes it for dead once
#: the heartbeat is this old (machines' clocks are assumed in step, as torch's rendezvous does).
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
JOB = "round_job.json"
METRICS = "metrics.json"
LAUNCH_LOG = "launch.log"
RUN_STATE = "machines.json"
WORKER = "tapir.training.worker"


@dataclass(frozen=True)
class Cluster:
    """What tapir needs from an accelerate config, read (and so validated) by accelerate itself."""

    path: Path
    distributed_type: str
    num_processes: int
    num_machines: int
    main_process_ip: str | None
    main_process_port: int | None
    mixed_precision: str
    mpirun_hostfile: str | None

    @property
    def per_machine(self) -> int:
        return max(1, self.num_processes // self.num_machines)

    @property
    def torchrun(self) -> bool:
        # accelerate launches multi-CPU jobs only through mpirun (a MULTI_CPU config without an
        # mpirun_hostfile starts ONE process, whatever num_processes says); torchrun, which its
        # multi-GPU launcher uses, starts the ranks instead, and ACCELERATE_USE_CPU makes them gloo.
        return self.distributed_type == "MULTI_CPU" and not self.mpirun_hostfile and self.num_processes > 1


def read_cluster(config: Path) -> Cluster:
    from accelerate.commands.config.config_args import load_config_from_file

    if not config.is_file():
        raise TrainingError(f"training.accelerate_config: file not found: {config}")
    try:
        loaded = load_config_from_file(str(config))
    except Exception as exc:  # accelerate raises ValueError/TypeError/yaml errors
        raise TrainingError(
            f"training.accelerate_config: {config} is not an accelerate config ({exc})"
        ) from None
    machines = max(1, int(loaded.num_machines or 1))
    processes = max(1, int(loaded.num_processes or 1))
    if processes % machines:
        raise TrainingError(
            f"training.accelerate_config: {config}: num_processes {processes} is not a multiple of "
            f"num_machines {machines}"
        )
    if machines > 1 and not loaded.main_process_ip:
        raise TrainingError(
            f"training.accelerate_config: {config}: main_process_ip is required with num_machines {machines}"
        )
    port = getattr(loaded, "main_process_port", None)
    return Cluster(
        path=config,
        distributed_type=str(getattr(loaded.distributed_type, "value", loaded.distributed_type)),
        num_processes=processes,
        num_machines=machines,
        main_process_ip=getattr(loaded, "main_process_ip", None),
        main_process_port=int(port) if port else None,
        mixed_precision=str(getattr(loaded.mixed_precision, "value", loaded.mixed_precision) or "no"),
        mpirun_hostfile=getattr(loaded, "mpirun_hostfile", None),
    )


def launch_command(
    cluster: Cluster, job: Path | str, machine_rank: int = 0, port: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command (and extra environment) that starts ``machine_rank``'s workers for one round."""
    if cluster.torchrun:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            str(cluster.num_machines),
            "--node_rank",
            str(machine_rank),
            "--nproc_per_node",
            str(cluster.per_machine),
            "--master_addr",
            cluster.main_process_ip or "127.0.0.1",
            "--master_port",
            str(port or cluster.main_process_port or 29500),
            "-m",
            WORKER,
            str(job),
        ]
        return command, {"ACCELERATE_USE_CPU": "true", "ACCELERATE_MIXED_PRECISION": cluster.mixed_precision}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cluster.path)]
    if cluster.num_machines > 1:
        command += ["--machine_rank", str(machine_rank)]
    if port:
        command += ["--main_process_port", str(port)]
    return [*command, "-m", WORKER, str(job)], {}


def node_commands(recipe: Recipe, job: Path | str) -> list[str]:
    """One shell line per machine: what each node runs for a round (the dry-run prints them)."""
    cluster = read_cluster(Path(str(recipe.training.accelerate_config)))
    lines = []
    for rank in range(cluster.num_machines):
        command, env = launch_command(cluster, job, rank)
        prefix = " ".join(f"{k}={v}" for k, v in env.items())
        lines.append(f"{prefix} {shlex.join(command)}".strip())
    return lines


def write_job(recipe: Recipe, spec: RoundSpec, identity: dict[str, Any]) -> Path:
    """The round's job file: what every worker (on every machine) trains. Machines 1.. find it
    while it exists (it goes when machine 0's launcher has ended) and join that launch."""
    job = spec.folder / JOB
    payload = {
        "recipe": recipe.model_dump(mode="json"),
        "round": {
            "name": spec.name,
            "data_path": str(spec.data_path),
            "start_model": spec.start_model,
            "folder": str(spec.folder),
        },
        "identity": identity,
        "owner": os.getpid(),  # the model's staging folder is named after this orchestrator
        "run": (read_run_state(spec.folder.parent) or {}).get("run"),
        "launch": uuid.uuid4().hex,
    }
    write_json(job, payload)
    return job


def read_run_state(train_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((train_dir / RUN_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


@contextmanager
def machines_informed(recipe: Recipe) -> Iterator[None]:
    """On machine 0 of a multi-machine run: ``<train_dir>/machines.json`` says this run is going
    (the other machines' ``tapir train --machine-rank N`` follow it) and, at the end, how it ended."""
    settings = recipe.training
    if settings.launcher != "accelerate":
        yield
        return
    cluster = read_cluster(Path(str(settings.accelerate_config)))
    if cluster.num_machines == 1:
        yield
        return
    train_dir = recipe.resolved_train_dir
    run = {
        "run": uuid.uuid4().hex,
        "machines": cluster.num_machines,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    stop = threading.Event()

    def beat() -> None:  # "running" with a fresh heartbeat: a killed machine 0 stops beating
        while True:
            with contextlib.suppress(OSError):
                write_json(train_dir / RUN_STATE, {**run, "state": "running", "heartbeat": time.time()})
            if stop.wait(HEARTBEAT_S):
                return

    beat_once = threading.Thread(target=beat, name="machines-heartbeat", daemon=True)
    beat_once.start()
    try:
        yield
    except BaseException as exc:
        stop.set()
        beat_once.join()
        write_json(train_dir / RUN_STATE, {**run, "state": "failed", "error": str(exc)[:300]})
        raise
    stop.set()
    beat_once.join()
    write_json(train_dir / RUN_STATE, {**run, "state": "finished"})


def machine_zero_alive(state: dict[str, Any] | None, now: float | None = None) -> tuple[bool, str]:
    """Whether ``machines.json`` shows a machine 0 that runs now, and if not, why: no run, a run
    that ended, one whose process is gone (same host), or one whose heartbeat stopped."""
    now = time.time() if now is None else now
    if state is None:
        return False, "no machines.json (machine 0 has not started)"
    if state.get("state") != "running":
        return False, f"machine 0's last run is {state.get('state')!r}"
    pid, host = state.get("pid"), state.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not process_alive(pid):
        return False, f"machine 0's run (pid {pid} on {host}) is gone but its machines.json says running"
    beat = state.get("heartbeat")
    if not isinstance(beat, (int, float)) or now - beat > STALE_AFTER_S:
        when = time.strftime("%H:%M:%S", time.localtime(beat)) if isinstance(beat, (int, float)) else "never"
        return False, f"machine 0's run (pid {pid} on {host}) stopped its heartbeat (last {when})"
    return True, "running"


def train_round_with_accelerate(
    recipe: Recipe, spec: RoundSpec, identity: dict[str, Any], console: Console | None = None
) -> dict[str, Any]:
    cluster = read_cluster(Path(str(recipe.training.accelerate_config)))
    (spec.folder / METRICS).unlink(missing_ok=True)
    job = write_job(recipe, spec, identity)
    # One machine, no port in the config: a free loopback port, so two runs never meet.
    port = free_port() if cluster.num_machines == 1 and not cluster.main_process_port else None
    try:
        code = run_launcher(cluster, job, spec, 0, port, console)
    finally:
        job.unlink(missing_ok=True)  # the launch is over: no machine may join it now
    if code != 0 or not (spec.folder / METRICS).is_file():
        raise IncompleteRunError(failure_line(spec, code, spec.folder / LAUNCH_LOG))
    return json.loads((spec.folder / METRICS).read_text(encoding="utf-8"))


def run_launcher(
    cluster: Cluster, job: Path, spec: RoundSpec, machine_rank: int, port: int | None, console: Console | None
) -> int:
    """Start this machine's ranks for the round and wait for them; their output goes to the log."""
    command, extra = launch_command(cluster, job, machine_rank, port)
    log = spec.folder / (LAUNCH_LOG if machine_rank == 0 else f"launch-machine-{machine_rank}.log")
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **extra})
        try:
            return _follow(process, spec, cluster, console)
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            process.wait()
            raise


def _follow(process: subprocess.Popen, spec: RoundSpec, cluster: Cluster, console: Console | None) -> int:
    """Wait for the launcher, showing the main rank's logged steps meanwhile."""
    if console is None:
        return process.wait()
    where = f"{cluster.num_processes} processes" + (
        f" on {cluster.num_machines} machines" if cluster.num_machines > 1 else ""
    )
    with console.status(f"{spec.name}: starting {where} (log: {spec.folder / LAUNCH_LOG})") as status:
        while process.poll() is None:
            try:
                steps = [r for r in read_log(spec.folder / LOG_FILE) if "loss" in r]
            except ValueError:  # a line the main rank is writing right now: read it next time
                steps = []
            if steps:
                last = steps[-1]
                status.update(f"{spec.name}: step {last['step']} on {where}, loss {float(last['loss']):.3f}")
            time.sleep(0.5)
    return int(process.returncode)


# torchrun's failure summary (accelerate's multi-GPU launcher prints the same):
#   Root Cause (first observed failure):
#   [0]:
#     rank      : 1 (local_rank: 1)
#     exitcode  : -9 (pid: 4242)  (SIGKILL)
_FAILED_RANK = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")
_ERROR_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?([A-Za-z_.]*(?:Error|Exception)\b.*)$", re.MULTILINE)


def failure_line(spec: RoundSpec, code: int, log: Path) -> str:
    """One line: which rank died and how, and what the next run will do."""
    text = log.read_text(encoding="utf-8", errors="replace").rsplit("\n=== ", 1)[-1]
    failed = _FAILED_RANK.findall(text.rsplit("Root Cause", 1)[-1])  # the first rank to fail
    if failed:
        rank, exit_code = int(failed[0][0]), int(failed[0][1])
        how = _signal_name(-exit_code) if exit_code < 0 else f"exit status {exit_code}"
        cause = f"training process rank {rank} died ({how})"
    else:
        cause = f"the launcher exited with status {code}"
    errors = [e for e in _ERROR_LINE.findall(text) if "ChildFailedError" not in e]
    if errors and not (failed and int(failed[0][1]) < 0):
        cause += f": {errors[-1].strip()[:200]}"
    checkpoint = last_checkpoint(spec)
    resume = (
        f"the next run resumes from {Path(checkpoint).name}"
        if checkpoint
        else "the next run trains the round from its start"
    )
    return f"{spec.name}: {cause}; {resume} (launcher log: {log})"


def _signal_name(number: int) -> str:
    try:
        return f"signal {number}, {signal.Signals(number).name}"
    except ValueError:
        return f"signal {number}"
