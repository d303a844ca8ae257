"""Fault injection: `tapir data` against a loopback endpoint that fails, and a user who kills it.

What must hold (issue 12): a run killed with SIGKILL at any moment resumes to the same bytes as
an uninterrupted run, asking again only what was in flight; a 30 %-flaky endpoint followed by
a healthy one gives the bytes of a run that never saw a fault; changed seeds give new rows;
killing tapir's main process leaves none of its workers behind. Every run is the real CLI in a
subprocess against ``tapir.serving.simulator`` (the same endpoint the API-scale benchmark uses).
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

from tests.test_cli import tapir

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fault-injection")]  # one never-faulted run

REPO = Path(__file__).resolve().parents[1]
SEEDS = 40
FEW = 12  # for runs whose point is not the bytes of the 40-seed reference
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
    "fault_preflight": True,  # the pre-flight checks meet the same faults as the run
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


def _recipe(work: Path, endpoint: Endpoint, max_retries: int = 6, seeds: int = SEEDS) -> Path:
    seeds = BENCH.write_seeds(work / "seeds.jsonl", seeds)
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


@pytest.fixture(scope="session")  # once per worker, whatever runs between its tests
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
    train = tapir("train", "--recipe", recipe, timeout=300)
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


def test_batch_mode_killed_while_polling_resumes_its_batches_and_gives_the_online_bytes(
    tmp_path, never_faulted
):
    """Teacher and judge through the Batch API: a kill -9 while a batch is polled, then a rerun,
    submits no request twice (the simulator counts), and the rows are the online run's."""
    work = tmp_path / "run"
    endpoint = Endpoint(work, faults={"batch_delay_s": 1.0})
    try:
        recipe = _recipe(work, endpoint)
        body = yaml.safe_load(recipe.read_text())
        for role in ("teacher", "judge"):
            body[role] = {**body[role], "batch": True, "batch_poll_s": 0.1}
        recipe.write_text(yaml.safe_dump(body, sort_keys=False))
        process = _start(recipe, work / "tapir.log")
        deadline = time.monotonic() + 120
        while endpoint.stats()["batches_created"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None and endpoint.stats()["batches_created"] >= 1
        time.sleep(0.3)  # polling: the batch needs a second
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        created_before_rerun = endpoint.stats()["batches_created"]
        assert _run(recipe, work / "tapir.log") == 0, (work / "tapir.log").read_text()[-3000:]
        stats = endpoint.stats()
    finally:
        endpoint.close()
    print(f"batch mode: {created_before_rerun} batches before the kill, {stats['batches_created']} in all")
    assert stats["batch_requests_again"] == 0 and stats["answered_again"] == 0, stats
    assert _data_files(work) == never_faulted["files"]
    summary = json.loads((work / "out" / "summary.json").read_text())
    assert summary["usage"]["teacher"]["batches_resumed"] >= 1
    assert summary["usage"]["judge"]["batches"] >= 1 and summary["usage"]["student"]["batches"] == 0


def test_a_spend_cap_refuses_a_plan_over_it_and_stops_a_run_that_reaches_it(tmp_path):
    """Instructions far longer than the plan's typical one make the run's input tokens (the only
    priced ones here) exceed its upper bound: the cap stops it (exit 3, one line), every answer
    so far is cached, and the rerun without a cap asks none of them again."""
    work = tmp_path / "run"
    endpoint = Endpoint(work)
    try:
        recipe = _recipe(work, endpoint, seeds=FEW)
        with (work / "seeds.jsonl").open("w") as handle:
            for i in range(FEW):
                handle.write(
                    json.dumps({"instruction": f"Summarize case {i}: " + "word " * 2500, "input": ""}) + "\n"
                )
        body = yaml.safe_load(recipe.read_text())
        for role in ("teacher", "student", "judge"):
            body[role] = {**body[role], "price_per_million_tokens": {"input": 1000.0, "output": 0.0}}
        recipe.write_text(yaml.safe_dump(body, sort_keys=False))
        plan = tapir("data", "--recipe", recipe, "--dry-run", "--json", "--max-spend", "1e9")
        upper = json.loads(plan.stdout)["cost"]["upper_usd"]
        refused = tapir("data", "--recipe", recipe, "--max-spend", f"{upper / 2:.2f}")
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith("tapir: error: pipeline.max_spend_usd: the plan may cost up to")
        assert endpoint.stats()["requests"] == 0

        capped = tapir("data", "--recipe", recipe, "--max-spend", f"{upper * 1.05:.2f}", timeout=300)
        answered = endpoint.stats()["answered"]
        assert capped.returncode == 3, capped.stderr[-2000:]
        assert capped.stderr.startswith("tapir: error: pipeline.max_spend_usd: the run reached its")
        assert "Traceback" not in capped.stdout + capped.stderr
        summary = json.loads((work / "out" / "summary.json").read_text())
        assert summary["spend"]["usd"] >= upper * 1.05 and summary["spend"]["max_spend_usd"] == pytest.approx(
            upper * 1.05, rel=1e-3
        )
        assert "cap $" in (work / "out" / "README.md").read_text()

        assert _run(recipe, work / "tapir.log") == 0, (work / "tapir.log").read_text()[-3000:]
        stats = endpoint.stats()
    finally:
        endpoint.close()
    assert 0 < answered < stats["answered"] and stats["answered_again"] == 0, stats


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


def test_a_second_run_on_the_same_output_or_cache_is_refused_and_the_first_is_unharmed(
    tmp_path, never_faulted
):
    """Two terminals, one recipe: the second run names the first one's pid and leaves; the first
    ends with the bytes of a lone run."""
    work = tmp_path / "run"
    endpoint = Endpoint(work, latency_ms=60)
    try:
        recipe = _recipe(work, endpoint)
        first = _start(recipe, work / "first.log")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and endpoint.stats()["requests"] < 5:
            time.sleep(0.2)
        assert first.poll() is None, (work / "first.log").read_text()[-2000:]
        same_output = tapir("data", "--recipe", recipe, timeout=120)
        # its own folder, but the same recipe's distilabel cache
        other_output = tapir("data", "--recipe", recipe, "--output", work / "other", timeout=120)
        assert first.wait(timeout=600) == 0, (work / "first.log").read_text()[-3000:]
        stats = endpoint.stats()
    finally:
        endpoint.close()
    for second, field in ((same_output, "output_dir"), (other_output, "cache_dir")):
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
        assert lines[0].startswith(f"tapir: error: {field}: ") and f"(pid {first.pid})" in lines[0], lines[0]
    assert not (work / "other").exists()
    assert _data_files(work) == never_faulted["files"]
    assert stats["answered_again"] == 0  # the refused runs asked nothing
    assert not list(work.glob(".*.lock")) and not list((work / "cache" / "distilabel").glob("*.lock"))


def test_the_pre_flight_survives_a_flaky_endpoint(tmp_path):
    """30 runs' pre-flights (model list and a one-token chat with log-probabilities, for the three
    roles) against an endpoint failing 30 % of requests in every way: every one lets its run start."""
    from tapir.recipe import ModelSpec
    from tapir.serving.llm_factory import _CHAT_CHECKED, preflight

    endpoint = Endpoint(tmp_path, latency_ms=5, faults={**FLAKY, "hang_s": 30})
    started, refused = 0, []
    try:
        spec = ModelSpec(
            backend="openai",
            model="sim",
            base_url=f"http://127.0.0.1:{endpoint.port}/v1",
            api_key_env="TAPIR_SIM_KEY",
        )
        os.environ.setdefault("TAPIR_SIM_KEY", "not-a-secret")
        for _ in range(30):
            try:
                for role in ("teacher", "student", "judge"):
                    _CHAT_CHECKED.clear()  # a fresh process each run
                    preflight(spec, role, timeout_s=2.0, top_logprobs=20 if role == "judge" else None)
                started += 1
            except Exception as error:  # what a run would have stopped with
                refused.append(str(error))
        faults = endpoint.stats()["faults"]
    finally:
        endpoint.close()
    print(f"pre-flight: {started} of 30 started; faults met: {faults}")
    assert sum(faults.values()) >= 30  # the checks did meet faults
    assert started == 30, refused


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"rate_5xx": 1.0}, f"teacher: all {FEW} calls failed for good after retries (HTTP 503 ×{FEW})"),
        (
            {"reject_after": 5},
            f"student: all {FEW} calls failed for good after retries (HTTP 401 ×{FEW})",
        ),
    ],
    ids=["every-call-5xx", "key-revoked-mid-run"],
)
def test_when_every_call_of_a_role_fails_the_run_says_which_and_why(tmp_path, faults, expected):
    work = tmp_path / "run"
    endpoint = Endpoint(work, faults=faults)
    try:
        recipe = _recipe(work, endpoint, max_retries=1, seeds=FEW)
        code = _run(recipe, work / "tapir.log")
    finally:
        endpoint.close()
    log = (work / "tapir.log").read_text()
    error = [line for line in log.splitlines() if line.startswith("tapir: error:")]
    assert code == 3 and len(error) == 1, log[-3000:]
    assert expected in error[0], error[0]
    assert "Traceback" not in log
    out = work / "out"
    assert (out / "data" / "pool.parquet").is_file()  # what the run learned is kept
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failed_calls"] > 0
    # failed answers are not graded: the judge is asked only for answers that exist
    import pandas as pd

    pool = pd.read_parquet(out / "data" / "pool.parquet")
    answered = int(pool["teacher_response"].notna().sum() + pool["student_response"].notna().sum())
    grading_calls = sum(
        record["calls"]
        for path in (out / "logs").glob("usage.judge.*.jsonl")
        for record in map(json.loads, path.read_text().splitlines())
        if record["step"].startswith("judge_")
    )
    assert grading_calls == answered, (grading_calls, answered)  # one grade per answer, none for a failure
    graded_nothing = pool["teacher_response"].isna() & pool["teacher_score"].notna()
    assert not graded_nothing.any()


def test_a_judge_without_log_probabilities_stops_the_run_before_any_call(tmp_path):
    work = tmp_path / "run"
    endpoint = Endpoint(work, faults={"no_logprobs": True})
    try:
        code = _run(_recipe(work, endpoint, seeds=FEW), work / "tapir.log")
        stats = endpoint.stats()
    finally:
        endpoint.close()
    log = (work / "tapir.log").read_text()
    assert code == 2 and "judging.scoring: sampled" in log, log[-2000:]
    assert stats["requests"] == 0  # nothing of the graph was paid for
    assert not (work / "out").exists()


def test_kill_9_leaves_no_temporary_folder_behind_once_the_next_run_starts(tmp_path):
    import tempfile

    work = tmp_path / "run"
    scratch = Path(tempfile.mkdtemp(prefix="tk9-", dir="/tmp"))  # short: sockets live under it
    endpoint = Endpoint(work, latency_ms=300)
    try:
        recipe = _recipe(work, endpoint, seeds=FEW)
        process = _start(recipe, work / "tapir.log", env={"TMPDIR": str(scratch)})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and endpoint.stats()["requests"] < 5:
            time.sleep(0.3)
        left = sorted(p.name for p in scratch.iterdir())
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert left == [f"tapir-run-{process.pid}"], left  # everything of the run's under one folder
        assert any(p.name.startswith("pymp-") for p in (scratch / left[0]).iterdir())
        again = _start(recipe, work / "tapir.log", env={"TMPDIR": str(scratch)})
        assert again.wait(timeout=600) == 0, (work / "tapir.log").read_text()[-3000:]
    finally:
        endpoint.close()
    assert list(scratch.iterdir()) == []  # the killed run's folder went with the next run
    scratch.rmdir()


def test_ctrl_c_during_a_data_run_says_interrupted_and_writes_nothing(tmp_path):
    work = tmp_path / "run"
    endpoint = Endpoint(work, latency_ms=300)
    try:
        process = _start(_recipe(work, endpoint, seeds=FEW), work / "tapir.log")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and endpoint.stats()["requests"] < 5:
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGINT)  # what Ctrl-C sends tapir's main process
        code = process.wait(timeout=300)
    finally:
        endpoint.close()
        os.killpg(process.pid, signal.SIGKILL) if _group_alive(process.pid) else None
    log = (work / "tapir.log").read_text()
    assert code == 130, log[-3000:]
    assert log.rstrip().endswith("tapir: interrupted") and "nothing to train on" not in log, log[-2000:]
    assert not (work / "out").exists()  # no folder that looks finished, nor a half-written one


def test_a_run_whose_every_call_fails_keeps_the_previous_complete_output(tmp_path, never_faulted):
    work = tmp_path / "run"
    shutil.copytree(never_faulted["work"], work)  # a finished, complete run
    before = _data_files(work)
    manifest_before = (work / "out" / "manifest.json").read_bytes()
    broken = Endpoint(work, faults={"rate_5xx": 1.0})  # answers every chat request with a 500
    try:
        recipe = _recipe(work, broken, max_retries=0)
        body = yaml.safe_load(recipe.read_text())
        BENCH.write_seeds(work / "other.jsonl", SEEDS + 4)  # new prompts: nothing is cached
        lines = (work / "other.jsonl").read_text().splitlines()[-4:]
        (work / "other.jsonl").write_text("\n".join(lines) + "\n")
        body["seeds"]["source"] = str(work / "other.jsonl")
        recipe.write_text(yaml.safe_dump(body))
        code = _run(recipe, work / "tapir.log")
    finally:
        broken.close()
    log = (work / "tapir.log").read_text()
    assert code == 3, log[-3000:]
    assert "keeps the previous complete run" in log and "out.incomplete" in log, log[-2000:]
    assert _data_files(work) == before and (work / "out" / "manifest.json").read_bytes() == manifest_before
    beside = json.loads((work / "out.incomplete" / "manifest.json").read_text())
    assert beside["failed_calls"] > 0
