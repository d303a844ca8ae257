"""`launcher: accelerate` over two real CPU processes (gloo): the ranks split each global batch,
the loss matches one process, the main rank alone writes the model, and a killed rank fails the
round with one line that the next run resumes from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from tapir.recipe import Recipe
from tapir.serving.engines import free_port
from tapir.training.launch import launch_command, read_cluster
from tapir.training.rounds import run_training

from .test_cli import REPO
from .test_training import conversation, data_run, recipe_for, weights
from .tiny_student import build_tiny_student

TWO_CPUS = REPO / "training" / "accelerate" / "multi_cpu_2proc.yaml"
QUIET = Console(quiet=True)
# Same rows in the same order (sequential sampling): rank r of 2 takes rows r, r+2, ... and the
# two ranks' gradients are averaged, so each step sees what one process sees with twice the batch.
SEQUENTIAL = {"train_sampling_strategy": "sequential"}
# float32 sums in another order (per rank, then all-reduced): equal to ~1e-6 here.
LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    corpus = [m["content"] for i in range(12) for m in conversation(i)["messages"]]
    return build_tiny_student(tmp_path_factory.mktemp("tiny") / "model", corpus)


def two_process_recipe(tmp_path: Path, model: Path, **training) -> Recipe:
    return recipe_for(
        tmp_path,
        model,
        rounds=1,
        launcher="accelerate",
        accelerate_config=str(TWO_CPUS),
        per_device_train_batch_size=1,
        sft_options=SEQUENTIAL,
        **training,
    )


def step_losses(train_dir: Path) -> list[float]:
    log = (train_dir / "round_1" / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in log if "loss" in json.loads(line)]


@pytest.mark.integration
def test_the_shipped_cpu_config_starts_two_gloo_ranks_with_torchrun():
    cluster = read_cluster(TWO_CPUS)
    command, env = launch_command(cluster, "job.json", port=29999)
    assert cluster.num_processes == 2 and cluster.torchrun
    assert command[1:4] == ["-m", "torch.distributed.run", "--nnodes"]
    assert command[command.index("--nproc_per_node") + 1] == "2"
    assert command[-3:] == ["-m", "tapir.training.worker", "job.json"]
    assert env["ACCELERATE_USE_CPU"] == "true"


@pytest.mark.integration
def test_two_processes_match_one_at_the_same_global_batch(tmp_path, tiny_model):
    one = recipe_for(
        tmp_path / "one",
        tiny_model,
        rounds=1,
        max_steps=5,
        per_device_train_batch_size=2,
        sft_options=SEQUENTIAL,
    )
    data_run(tmp_path / "one" / "data-run", {"round_1": 10}, one)
    two = two_process_recipe(tmp_path / "two", tiny_model, max_steps=5)
    data_run(tmp_path / "two" / "data-run", {"round_1": 10}, two)

    alone = run_training(one, QUIET)
    together = run_training(two, QUIET)

    expected, got = step_losses(alone), step_losses(together)
    assert len(got) == len(expected) == 5
    assert got == pytest.approx(expected, rel=LOSS_TOLERANCE), (expected, got)
    # ... and they are not all alike: the steps saw different rows as training went on
    assert len({round(x, 3) for x in expected}) == 5
    metrics = json.loads((together / "round_1" / "manifest.json").read_text())["metrics"]
    assert metrics["processes"] == 2 and metrics["global_step"] == 5
    assert (
        metrics["num_input_tokens_seen"]
        == json.loads((alone / "round_1" / "manifest.json").read_text())["metrics"]["num_input_tokens_seen"]
    )  # both ranks' tokens counted, once
    # One model, written once, by the main rank: no rank's staging folder is left beside it.
    round_dir = together / "round_1"
    assert sorted(p.name for p in round_dir.iterdir() if p.name.startswith(".")) == []
    trained = weights(round_dir / "model")
    assert all(
        torch.allclose(v, trained[k], atol=1e-5) for k, v in weights(alone / "round_1" / "model").items()
    )


def _ranks(launcher: int) -> dict[int, int]:
    """rank -> pid of the worker processes under ``launcher`` (from their environment)."""
    import psutil

    found = {}
    for child in psutil.Process(launcher).children(recursive=True):
        try:
            rank = child.environ().get("RANK")  # torchrun's own process has none
            if rank is not None and "tapir.training.worker" in " ".join(child.cmdline()):
                found[int(rank)] = child.pid
        except psutil.Error:
            continue
    return found


@pytest.mark.e2e
def test_a_killed_rank_fails_the_round_in_one_line_and_the_next_run_resumes(tmp_path, tiny_model):
    recipe = two_process_recipe(tmp_path, tiny_model, max_steps=400, save_steps=10, logging_steps=10)
    data_run(tmp_path / "data-run", {"round_1": 8}, recipe)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    checkpoints = recipe.resolved_train_dir / "round_1" / "checkpoints"
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "tapir.cli", "train", "--recipe", str(recipe_file)]

    run = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    ranks = _ranks(run.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)
    out, err = run.communicate(timeout=120)

    assert run.returncode == 3, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "round_1: training process rank 1 died (signal 9, SIGKILL)" in lines[0]
    assert "the next run resumes from checkpoint-" in lines[0] and "launch.log" in lines[0]
    saved = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert saved and saved[-1] < 400
    assert not (recipe.resolved_train_dir / "round_1" / "model").exists()

    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    manifest = json.loads((recipe.resolved_train_dir / "round_1" / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from"].startswith("checkpoint-")
    assert int(manifest["metrics"]["resumed_from"].split("-")[1]) >= saved[-1]
    assert manifest["metrics"]["global_step"] == 400 and manifest["metrics"]["processes"] == 2


@pytest.mark.e2e
def test_two_machines_on_loopback_train_each_round_together(tmp_path, tiny_model):
    """num_machines: 2 with one process each, both "machines" this box: machine 0 runs `tapir
    train`, machine 1 `tapir train --machine-rank 1`; their ranks meet for every round."""
    config = yaml.safe_load(TWO_CPUS.read_text())
    config.update(num_machines=2, main_process_port=free_port())
    machines = tmp_path / "two_machines.yaml"
    machines.write_text(yaml.safe_dump(config))
    recipe = recipe_for(
        tmp_path,
        tiny_model,
        rounds=2,
        max_steps=3,
        launcher="accelerate",
        accelerate_config=str(machines),
        per_device_train_batch_size=1,
        sft_options=SEQUENTIAL,
    )
    data_run(tmp_path / "data-run", {"warmup": 2, "round_1": 6, "round_2": 6}, recipe)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    base = [sys.executable, "-m", "tapir.cli", "train", "--recipe", str(recipe_file)]

    plan = subprocess.run([*base, "--dry-run", "--json"], cwd=REPO, env=env, capture_output=True, text=True)
    machines_plan = json.loads(plan.stdout)["machines"]
    assert [m["machine_rank"] for m in machines_plan] == [0, 1]
    assert machines_plan[1]["command"].endswith("--machine-rank 1")
    assert "--node_rank 1" in machines_plan[1]["round_launch"]

    follower = subprocess.Popen(
        [*base, "--machine-rank", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    leader = subprocess.run(base, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out, err = follower.communicate(timeout=60)
    assert leader.returncode == 0, leader.stderr
    assert follower.returncode == 0, err
    assert "3 round(s) trained here" in out
    train_dir = recipe.resolved_train_dir
    for name in ("warmup", "round_1", "round_2"):
        metrics = json.loads((train_dir / name / "manifest.json").read_text())["metrics"]
        assert metrics["processes"] == 2 and metrics["global_step"] == 3
        assert (train_dir / name / "launch-machine-1.log").is_file()
        assert not (train_dir / name / "round_job.json").exists()
    assert json.loads((train_dir / "machines.json").read_text())["state"] == "finished"


@pytest.mark.unit
def test_a_rank_that_raised_is_named_with_its_error(tmp_path):
    from tapir.training.launch import failure_line
    from tapir.training.sft import RoundSpec

    log = tmp_path / "launch.log"
    log.write_text(
        "\n=== old launch\nrank      : 0 (local_rank: 0)\n  exitcode  : -9 (pid: 1)\n"
        "\n=== 2026-12-02 launch\n[rank1]: Traceback (most recent call last):\n"
        "[rank1]: ValueError: the batch is empty\nRoot Cause (first observed failure):\n[0]:\n"
        "  rank      : 1 (local_rank: 1)\n  exitcode  : 1 (pid: 7)\n"
    )
    spec = RoundSpec("round_2", tmp_path / "d.parquet", "m", tmp_path / "round_2")
    line = failure_line(spec, 1, log)
    assert line.startswith(
        "round_2: training process rank 1 died (exit status 1): ValueError: the batch is empty;"
    )
    assert "the next run trains the round from its start" in line and "\n" not in line


@pytest.mark.integration
def test_machine_rank_needs_a_multi_machine_config(tmp_path, tiny_model):
    from .test_cli import assert_one_line_error, tapir

    recipe = two_process_recipe(tmp_path, tiny_model, max_steps=1)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    result = tapir("train", "--recipe", recipe_file, "--machine-rank", "1")
    assert_one_line_error(result, "--machine-rank: 1", "num_machines 1")


def _two_machine_recipe(tmp_path: Path, model: Path) -> Path:
    config = yaml.safe_load(TWO_CPUS.read_text())
    config.update(num_machines=2, main_process_port=free_port())
    machines = tmp_path / "two_machines.yaml"
    machines.write_text(yaml.safe_dump(config))
    recipe = recipe_for(
        tmp_path, model, rounds=1, max_steps=1, launcher="accelerate", accelerate_config=str(machines)
    )
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    return recipe_file


@pytest.mark.e2e  # two CLI processes' start-up each: kept out of test-quick
@pytest.mark.parametrize("machine_zero", ["never-started", "killed-while-running"])
def test_a_follower_waits_a_bounded_time_and_names_what_it_waited_for(tmp_path, tiny_model, machine_zero):
    from tapir.recipe import load_recipe

    from .test_cli import assert_one_line_error, tapir

    recipe_file = _two_machine_recipe(tmp_path, tiny_model)
    expected = "machine 0 has not started"
    if machine_zero == "killed-while-running":  # what a kill -9 of machine 0 leaves behind
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        train_dir = load_recipe(recipe_file).resolved_train_dir
        train_dir.mkdir(parents=True)
        state = {"run": "r1", "machines": 2, "pid": dead.pid, "state": "running", "heartbeat": time.time()}
        (train_dir / "machines.json").write_text(json.dumps({**state, "host": os.uname().nodename}))
        expected = f"(pid {dead.pid} on {os.uname().nodename}) is gone but its machines.json says running"
    started = time.monotonic()
    result = tapir("train", "--recipe", recipe_file, "--machine-rank", "1", "--wait-s", "2", timeout=120)
    assert_one_line_error(result, "--machine-rank 1: waited 2s for machine 0", expected)
    assert time.monotonic() - started < 60


@pytest.mark.unit
def test_machine_zero_is_taken_for_dead_once_its_heartbeat_stops():
    from tapir.training.launch import STALE_AFTER_S, machine_zero_alive

    now = 1_000_000.0
    state = {"state": "running", "pid": 1, "host": "another-host", "heartbeat": now - 1}
    assert machine_zero_alive(state, now) == (True, "running")
    alive, why = machine_zero_alive({**state, "heartbeat": now - STALE_AFTER_S - 1}, now)
    assert not alive and "stopped its heartbeat" in why
    assert machine_zero_alive({**state, "state": "finished"}, now)[0] is False
    assert machine_zero_alive(None, now) == (False, "no machines.json (machine 0 has not started)")
