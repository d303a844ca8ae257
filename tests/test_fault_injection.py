"""Fault injection: `tapir data` against a loopback endpoint that fails, and a user who kills it.

What must hold (issue 12): a run killed with SIGKILL at any moment resumes to the same bytes as
an uninterrupted run, asking again only what was in flight; a 30 %-flaky endpoint followed by
a healthy one gives the bytes of a run that never saw a fault; changed seeds give new rows;
killing tapir's main process leaves none of its workers behind. Every run is the real CLI in a
subprocess against ``tapir.simulator`` (the same endpoint the API-scale benchmark uses).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fault-injection")]  # one never-faulted run

REPO = Path(__file__).resolve().parents[1]
SEEDS = 40
SMALL = {"concurrency": 8, "batch_size": 8, "timeout_s": 1.0, "replicas": 1}
# 30 % of requests fail, in every way the simulator knows.
FLAKY = {
    "rate_5xx": 0.06,
    "rate_429": 0.04,
    "retry_after_s": 0.05,
    "rate_timeout": 0.03,
    "rate_truncated": 0.05,
    "rate_garbage": 0.05,
    "rate_empty": 0.04,
    "rate_drop": 0.03,
    "hang_s": 3600,
}


def _bench():
    spec = importlib.util.spec_from_file_location("api_scale", REPO / "benchmarks" / "api_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()


class Endpoint:
    """One simulator process on a free port."""

    def __init__(self, work: Path, latency_ms: float = 20, faults: dict | None = None) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = BENCH.free_port()
        self.process = BENCH.start_simulator(self.port, latency_ms, faults or {}, work / "simulator.log")

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _recipe(work: Path, endpoint: Endpoint, max_retries: int = 6) -> Path:
    seeds = BENCH.write_seeds(work / "seeds.jsonl", SEEDS)
    return BENCH.recipe(work, seeds, endpoint.port, max_retries=max_retries, **SMALL)


def _start(recipe: Path, log: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """`tapir data` in a process group of its own (so a test can kill all of it, or only its head)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tapir.cli", "data", "--recipe", str(recipe), *extra],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "TAPIR_SIM_KEY": "not-a-secret", **(env or {})},
        start_new_session=True,
    )


def _run(recipe: Path, log: Path, *extra: str, env: dict | None = None) -> int:
    return _start(recipe, log, *extra, env=env).wait(timeout=600)


def _data_files(work: Path) -> dict[str, bytes]:
    data = work / "out" / "data"
    return {p.name: p.read_bytes() for p in sorted(data.glob("*.parquet"))}


def _group_alive(pgid: int) -> list[psutil.Process]:
    alive = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def _wait_gone(processes: list[psutil.Process], within_s: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=within_s)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def never_faulted(tmp_path_factory):
    """The reference: the same seeds through a healthy endpoint, never interrupted."""
    work = tmp_path_factory.mktemp("never-faulted")
    endpoint = Endpoint(work)
    try:
        started = time.perf_counter()
        code = _run(_recipe(work, endpoint), work / "tapir.log")
        wall = time.perf_counter() - started
        stats = endpoint.stats()
    finally:
        endpoint.close()
    assert code == 0, (work / "tapir.log").read_text()[-3000:]
    assert stats["answered_again"] == 0  # one run asks every prompt once
    return {"files": _data_files(work), "wall_s": wall, "answered": stats["answered"], "work": work}


def test_a_flaky_endpoint_then_a_healthy_one_gives_the_bytes_of_a_run_never_faulted(tmp_path, never_faulted):
    work = tmp_path / "run"
    flaky = Endpoint(work, faults=FLAKY)
    try:
        recipe = _recipe(work, flaky, max_retries=2)  # few retries: some calls fail for good
        code = _run(recipe, work / "tapir.log")
        faults = flaky.stats()["faults"]
    finally:
        flaky.close()
    log = (work / "tapir.log").read_text()
    print(f"flaky run: faults injected {faults} ({sum(faults.values())} in all)")
    assert code == 3, log[-3000:]  # finished, but incomplete: "rerun me"
    assert "failed for good" in log and "Traceback" not in log
    assert all(faults[mode] > 0 for mode in ("5xx", "timeout", "truncated", "garbage", "empty", "drop")), (
        faults
    )
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert manifest["failed_calls"] > 0
    train = subprocess.run(
        [sys.executable, "-m", "tapir.cli", "train", "--recipe", str(recipe)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert train.returncode == 2 and "is incomplete" in train.stderr, train.stderr  # never trains on it

    healthy = Endpoint(work)
    try:
        recipe = _recipe(work, healthy, max_retries=1)
        assert _run(recipe, work / "tapir.log") == 0, (work / "tapir.log").read_text()[-3000:]
        again = healthy.stats()["answered"]
    finally:
        healthy.close()
    assert 0 < again < never_faulted["answered"]  # only what failed (and what it held up)
    assert _data_files(work) == never_faulted["files"]


def test_kill_9_at_random_moments_then_a_rerun_gives_the_uninterrupted_bytes(tmp_path, never_faulted):
    work = tmp_path / "run"
    endpoint = Endpoint(work)
    rng = random.Random(12)
    kills = 0
    try:
        recipe = _recipe(work, endpoint)
        for _ in range(5):
            process = _start(recipe, work / "tapir.log")
            time.sleep(rng.uniform(4.0, max(5.0, 0.5 * never_faulted["wall_s"])))  # mid-run
            if process.poll() is None:
                members = _group_alive(process.pid)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                kills += 1
                assert not _wait_gone(members, 5.0), "processes outlived the kill"
        assert kills >= 5
        assert _run(recipe, work / "tapir.log") == 0, (work / "tapir.log").read_text()[-3000:]
        stats = endpoint.stats()
    finally:
        endpoint.close()
    print(f"kill -9: {kills} kills, {stats['answered_again']} answers asked again of {stats['answered']}")
    assert _data_files(work) == never_faulted["files"]
    # Answers are cached as they arrive: only requests in flight at a kill are asked again.
    assert stats["answered_again"] <= kills * SMALL["concurrency"], stats
    assert not list(work.glob(".out.*")), "a killed run's staging folder was left behind"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killing_tapirs_main_process_leaves_no_worker_behind(tmp_path, sig):
    work = tmp_path / "run"
    endpoint = Endpoint(work, latency_ms=300)  # slow enough that the pipeline is mid-run
    try:
        process = _start(_recipe(work, endpoint), work / "tapir.log")
        main = psutil.Process(process.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and endpoint.stats()["requests"] < 5:
            time.sleep(0.5)
        children = main.children(recursive=True)
        assert len(children) >= 3, "the step workers had not started"
        os.kill(process.pid, sig)  # the main process only: its children must follow
        process.wait(timeout=120)
        left = _wait_gone(children, 5.0)
    finally:
        endpoint.close()
        os.killpg(process.pid, signal.SIGKILL) if _group_alive(process.pid) else None
    assert not left, [p.cmdline()[:3] for p in left]


def test_changed_seeds_give_new_rows_and_the_manifest_agrees(tmp_path, never_faulted):
    work = tmp_path / "run"
    shutil.copytree(never_faulted["work"], work)  # a finished run: its outputs and its caches
    endpoint = Endpoint(work)
    try:
        recipe = _recipe(work, endpoint)
        first = _pool_instructions(work)
        body = yaml.safe_load(recipe.read_text())
        BENCH.write_seeds(work / "other.jsonl", SEEDS + 8)
        lines = (work / "other.jsonl").read_text().splitlines()[-8:]
        (work / "other.jsonl").write_text("\n".join(lines) + "\n")
        body["seeds"]["source"] = str(work / "other.jsonl")
        recipe.write_text(yaml.safe_dump(body))
        assert _run(recipe, work / "tapir.log") == 0, (work / "tapir.log").read_text()[-3000:]
        second = _pool_instructions(work)
    finally:
        endpoint.close()
    seeds = {json.loads(line)["instruction"] for line in lines}
    assert len(first) == SEEDS and not (first & seeds)
    assert seeds <= second and not (first & second)  # the new seeds' rows, none of the old
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert manifest["seeds"]["rows_used"] == 8 and manifest["seeds"]["location"].endswith("other.jsonl")


def _pool_instructions(work: Path) -> set[str]:
    import pandas as pd

    pool = pd.read_parquet(work / "out" / "data" / "pool.parquet")
    return set(pool.loc[~pool["instruction"].str.contains("new problem"), "instruction"])


def test_a_key_the_recipe_names_never_reaches_the_console_the_outputs_or_the_cache(tmp_path):
    """The endpoint repeats the caller's key in every error body; a seed is too long for it."""
    planted = "planted-cred-4711-zq"  # a value no generic pattern would know as a secret
    work = tmp_path / "run"
    endpoint = Endpoint(
        work, faults={"api_key": planted, "echo_key_in_errors": True, "max_prompt_chars": 3000}
    )
    try:
        recipe = _recipe(work, endpoint)
        body = yaml.safe_load(recipe.read_text())
        for role in ("teacher", "student", "judge"):
            body[role]["api_key_env"] = "SIM_CREDENTIAL"  # a name that does not say "key"
        recipe.write_text(yaml.safe_dump(body))
        with (work / "seeds.jsonl").open("a") as seeds:
            seeds.write(json.dumps({"instruction": "Summarize this report: " + "word " * 800}) + "\n")
        code = _run(recipe, work / "tapir.log", env={"SIM_CREDENTIAL": planted})
    finally:
        endpoint.close()
    console = (work / "tapir.log").read_text()
    assert code == 0, console[-3000:]  # a prompt too long is the row's final answer, not a failure
    pool = json.loads((work / "out" / "summary.json").read_text())
    assert pool["parse_failure_reasons"]["teacher response"] == {"call failed: prompt too long (HTTP 400)": 1}
    assert "request carried Bearer ***" in (work / "out" / "logs" / "distilabel.log").read_text()  # echoed
    leaks = [p for p in work.rglob("*") if p.is_file() and planted.encode() in p.read_bytes()]
    assert planted not in console and not leaks, leaks
