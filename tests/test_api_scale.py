"""The API-scale benchmark in small (e2e tier): the whole `tapir data` pipeline against a
flaky OpenAI-compatible endpoint finishes, the concurrency cap holds across every step process,
and every injected fault is either retried or counted; every seed is accounted for."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("api_scale", REPO / "benchmarks" / "api_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
def test_small_api_scale_run_with_faults_accounts_for_everything(tmp_path):
    bench = _benchmark()
    faults = {**bench.FAULTS, "retry_after_s": 0.05}
    result = bench.run_scale(
        tmp_path, 120, latency_ms=30, faults=faults, concurrency=16, batch_size=32, timeout_s=1.0, replicas=2
    )
    assert result["exit_code"] == 0, (tmp_path / "tapir.log").read_text()[-3000:]
    simulator = result["simulator"]
    assert simulator["max_in_flight"] <= 16  # one cap across all step processes
    assert result["injected_faults"] >= 20, simulator  # the endpoint really was flaky
    # every fault was retried or ended a call as a counted failure; nothing silent. A request can
    # also time out on its own when this machine is busy: such retries are counted as time-outs,
    # so every other retry matches an injected fault exactly
    other_retries = result["retries"] - result["timeout_retries"]
    other_faults = result["injected_faults"] - result["injected_timeouts"]
    assert other_retries + result["failed_calls"] == other_faults
    assert result["timeout_retries"] >= result["injected_timeouts"]
    assert simulator["requests"] == result["requests"]  # every HTTP request the endpoint saw
    # every seed (and every expansion) is in the pool: graded hard/easy, or excluded with a reason
    steps = {s["step"]: s for s in result["steps"]}
    pool_rows = steps["respond_teacher"]["rows_in"]
    assert pool_rows >= 120 and sum(result["difficulty"].values()) == pool_rows
    answer_steps = ("respond_teacher", "respond_student", "judge_teacher", "judge_student")
    failed_rows = sum(steps[name]["failed"] for name in answer_steps)
    if failed_rows:  # a row whose call failed is excluded, never graded
        assert result["difficulty"]["excluded"] > 0 and result["excluded_reasons"]


def test_replicas_go_to_chain_clients_only_and_keep_every_signature(tmp_path):
    """pipeline.replicas: two processes for each client step that feeds ordinary steps; steps
    that feed a global step keep one (distilabel would let their last batch overtake a
    straggler); neither the number of processes nor the retry policy and time-out are part of
    any step's cache signature or of the response cache's keys."""
    import io

    from rich.console import Console

    from tapir.pipelines.dry_run import dry_run
    from tapir.pipelines.graph import build_pipeline
    from tapir.recipe import recipe_from_dict
    from tapir.serving.llm_factory import LLMContext

    from .conftest import tiny_recipe_dict

    model = {"backend": "openai", "model": "sim", "base_url": "http://127.0.0.1:9/v1", "max_concurrency": 8}

    def pipeline(replicas: int, retries: dict | None = None):
        served = {**model, **(retries or {})}
        data = tiny_recipe_dict(tmp_path, teacher=served, student=served, judge=served)
        data["pipeline"] = {"batch_size": 4, "replicas": replicas}
        recipe = recipe_from_dict(data)
        context = LLMContext(cache_dir=tmp_path / "cache", dry_run=True)
        built = build_pipeline(recipe, [{"instruction": "Say hi."}], context)
        return {name: built.dag.get_step(name)["step"] for name in built.dag}

    one, two = pipeline(1), pipeline(2, {"max_retries": 0, "timeout_s": 7})
    replicated = {name for name, step in two.items() if step.resources.replicas == 2}
    chain = ("respond_teacher", "respond_student", "judge_teacher", "judge_student", "classify_task")
    assert replicated == {*chain, *(f"{name}_expanded" for name in chain)}
    assert two["expand_instructions"].resources.replicas == 1  # feeds expansions_to_seeds (global)
    assert two["refine_responses"].resources.replicas == 1  # feeds plan_curriculum (global)
    assert {n: s.signature for n, s in one.items()} == {n: s.signature for n, s in two.items()}
    prompt = [{"role": "user", "content": "Say hi."}]
    keys = [steps["respond_teacher"].llm._cache_key(prompt, 1, {}) for steps in (one, two)]
    assert two["respond_teacher"].llm.max_retries == 0 and keys[0] == keys[1]
    data = tiny_recipe_dict(tmp_path, teacher=model, student=model, judge=model)
    data["pipeline"] = {"batch_size": 4, "replicas": 2}
    plan = dry_run(recipe_from_dict(data), Console(file=io.StringIO()))
    assert plan["replicas"] == dict.fromkeys(replicated, 2)  # the plan says so
