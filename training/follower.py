"""``tapir train --machine-rank N``: machine N (> 0) of a multi-machine run.

Machine 0's ``tapir train`` plans and orders everything (rounds, re-scores, manifests) and starts
its own ranks for each round; every other machine runs this follower, which starts that machine's
ranks for each round machine 0 launches (found through ``<round>/round_job.json`` on the shared
filesystem) and returns when machine 0's run has ended (``<train_dir>/machines.json``). It writes
nothing but its launcher's log; the ranks meet through torch's rendezvous at the config's
``main_process_ip:main_process_port``. All machines must see the training folder at the same path.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from rich.console import Console

from tapir.errors import IncompleteRunError, TrainingError
from tapir.recipe import Recipe
from tapir.training.launch import (
    JOB,
    RUN_STATE,
    machine_zero_alive,
    read_cluster,
    read_run_state,
    run_launcher,
)
from tapir.training.sft import RoundSpec


def follow_machine_zero(
    recipe: Recipe, console: Console, machine_rank: int, poll_s: float = 0.5, wait_s: float = 600.0
) -> None:
    """Start this machine's ranks for each round machine 0 launches, until its run ends. Waits at
    most ``wait_s`` for machine 0 to start, or to be seen alive again (its heartbeat): a machine 0
    that never came, or died, ends this with one line saying which."""
    if not math.isfinite(wait_s) or wait_s < 0:
        raise TrainingError(f"--wait-s: {wait_s:g} is not a number of seconds >= 0")
    settings = recipe.training
    if settings.launcher != "accelerate":
        raise TrainingError("--machine-rank: needs training.launcher: accelerate (one machine trains alone)")
    cluster = read_cluster(Path(str(settings.accelerate_config)))
    if not 0 < machine_rank < cluster.num_machines:
        raise TrainingError(
            f"--machine-rank: {machine_rank} is not a follower of training.accelerate_config's "
            f"num_machines {cluster.num_machines} (machine 0 runs plain `tapir train`; others 1..)"
        )
    train_dir = recipe.resolved_train_dir
    began = time.time()
    console.print(
        f"[bold]tapir train[/] machine {machine_rank} of {cluster.num_machines}: following machine 0 "
        f"through {train_dir}"
    )
    joined: set[str] = set()
    rounds = 0
    last_alive = began
    while True:
        state = read_run_state(train_dir)
        ended = state is not None and state.get("state") != "running"
        if ended and (train_dir / RUN_STATE).stat().st_mtime >= began:
            break  # machine 0's run, which began after this follower or while it waited, is over
        alive, why = machine_zero_alive(state)
        if alive:
            last_alive = time.time()
        elif time.time() - last_alive > wait_s:
            raise TrainingError(
                f"--machine-rank {machine_rank}: waited {wait_s:g}s for machine 0 through "
                f"{train_dir / RUN_STATE}: {why}; start (or restart) `tapir train` on machine 0, "
                "then this command again (--wait-s waits longer)"
            )
        run = state.get("run") if state and alive else None
        for job_path in sorted(train_dir.glob(f"*/{JOB}")) if run else []:
            job = _read(job_path)
            if not job or job.get("run") != run or job.get("launch") in joined:
                continue
            joined.add(job["launch"])
            spec = RoundSpec(
                name=job["round"]["name"],
                data_path=Path(job["round"]["data_path"]),
                start_model=job["round"]["start_model"],
                folder=Path(job["round"]["folder"]),
            )
            console.print(f"{spec.name}: starting machine {machine_rank}'s {cluster.per_machine} process(es)")
            code = run_launcher(cluster, job_path, spec, machine_rank, None, None)
            rounds += 1
            note = "done" if code == 0 else f"its launcher exited with status {code}"
            console.print(f"{spec.name}: machine {machine_rank} {note}")
        time.sleep(poll_s)
    if state and state.get("state") == "failed":
        raise IncompleteRunError(
            f"machine 0's run failed after {rounds} round(s) here: {state.get('error', 'see its console')}"
        )
    console.print(
        f"[green]machine {machine_rank}[/]: machine 0's run finished; {rounds} round(s) trained here"
    )


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # gone, or being replaced: read again next time
