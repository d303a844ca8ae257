"""The API-scale benchmark in small (fast tier): the whole `tapir data` pipeline against a
flaky OpenAI-compatible endpoint finishes, the concurrency cap holds across every step process,
and every injected fault is either retried or counted; every seed is accounted for."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("api_scale", REPO / "benchmarks" / "api_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_api_scale_run_with_faults_accounts_for_everything(tmp_path):
    bench = _benchmark()
    faults = {**bench.FAULTS, "retry_after_s": 0.05}
    result = bench.run_scale(
        tmp_path, 120, latency_ms=30, faults=faults, concurrency=16, batch_size=32, timeout_s=1.0
    )
    assert result["exit_code"] == 0, (tmp_path / "tapir.log").read_text()[-3000:]
    simulator = result["simulator"]
    assert simulator["max_in_flight"] <= 16  # one cap across all step processes
    assert result["injected_faults"] >= 20, simulator  # the endpoint really was flaky
    # every fault was retried or ended a call as a counted failure; nothing silent
    assert result["retries"] + result["failed_calls"] == result["injected_faults"]
    assert simulator["requests"] == result["requests"]  # every HTTP request the endpoint saw
    # every seed (and every expansion) is in the pool: graded hard/easy, or excluded with a reason
    steps = {s["step"]: s for s in result["steps"]}
    pool_rows = steps["respond_teacher"]["rows_in"]
    assert pool_rows >= 120 and sum(result["difficulty"].values()) == pool_rows
    answer_steps = ("respond_teacher", "respond_student", "judge_teacher", "judge_student")
    failed_rows = sum(steps[name]["failed"] for name in answer_steps)
    if failed_rows:  # a row whose call failed is excluded, never graded
        assert result["difficulty"]["excluded"] > 0 and result["excluded_reasons"]
