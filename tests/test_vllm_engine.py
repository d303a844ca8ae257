"""vLLM, executed (the ``vllm`` tier): tapir starts vLLM's OpenAI server from its own virtualenv
(``make vllm-env``: vLLM's CPU build here) and every role is its client.

What a wrong request looks like on a current vLLM is silence: a removed or unknown field is
logged and ignored, the answer comes back unconstrained, HTTP 200. So these tests read the
engine's own log and fail on any field it ignored, and check that every constrained answer
(judge grades, task labels) parsed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import datasets
import pytest
import yaml

from tapir.serving.backends import vllm_missing
from tests.conftest import SELF_INSTRUCT, make_recipe, seed_file, shared_mt_bench, tiny_recipe_dict
from tests.test_cli import tapir
from tests.tiny_student import build_tiny_student

pytestmark = pytest.mark.vllm
LABELS = ["Math", "Writing", "Code Generation", "Open QA", "Others"]
#: What vLLM logs when a request carries a field it does not honour (removed guided_* fields,
#: fields of no schema): the constraint or setting is dropped, the answer is still HTTP 200.
IGNORED_FIELDS = re.compile(r"ignored|not supported|unrecognized|unknown field|extra inputs", re.IGNORECASE)
#: Engine memory: a small KV cache (GiB) for the 2-core, shared CI machine.
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


@pytest.fixture(scope="module")
def vllm_env():
    reason = vllm_missing()
    if reason:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


def engine_logs(folder: Path) -> dict[str, str]:
    logs = {str(p): p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("engine.vllm*.log")}
    assert logs, f"no vLLM engine log under {folder}"
    return logs


def ignored_request_fields(log: str) -> list[str]:
    """Lines where the server says it dropped part of a request (its start-up chatter aside)."""
    return [line for line in log.splitlines() if "request" in line.lower() and IGNORED_FIELDS.search(line)]


def test_a_data_pass_with_every_role_on_one_vllm_engine(tmp_path, vllm_env):
    role = {"backend": "vllm", "model": "embedded", "context_length": 1024}
    recipe = tiny_recipe_dict(
        tmp_path,
        teacher={**role, "generation": {"max_new_tokens": 48, "temperature": 0.7}},
        student={**role, "seed": 7, "generation": {"max_new_tokens": 32, "temperature": 0.7}},
        judge=role,  # it grades with judging.* and labels with taxonomy.*
        seeds={"source": str(SELF_INSTRUCT), "limit": 8},
        judging={"scoring": "expected", "max_new_tokens": 16, "temperature": 0.0},
        difficulty={"delta": 0.1},
        taxonomy={"labels": LABELS, "target_mix": {label: 0.2 for label in LABELS}, "classifier": "llm"},
        expansion={"per_hard_seed": 1, "max_hard_seeds": 2, "budget": 2, "max_new_tokens": 32},
        refinement={"max_new_tokens": 48},
        # fills whatever the grades make hard: vLLM's CPU numerics move with its batching, and
        # how many rows are hard is not this test's point
        curriculum={"rounds": 2, "hard_share": [0.0, 0.5], "round_size": 2, "warmup_size": 1},
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = tapir("data", "--recipe", path, env_extra=ENGINE_ENV, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    out = Path(recipe["output_dir"])
    summary = json.loads((out / "summary.json").read_text())
    plan = [e for e in summary.get("engines", [])] or None
    # One engine served teacher, student, judge and classifier.
    logs = engine_logs(out)
    assert len(logs) == 1, sorted(logs)
    assert plan is None or len(plan) == 1
    # Every constrained answer parsed: grades (read as expected scores over vLLM's
    # log-probabilities) and task labels; nothing failed.
    assert not any(summary["parse_failures"].values()), summary["parse_failures"]
    pool = datasets.load_dataset("parquet", data_files=str(out / "data/pool.parquet"), split="train")
    assert len(pool) >= 8
    assert {row["task"] for row in pool} <= set(LABELS)
    graded = [r for r in pool if r["difficulty"] != "excluded"]
    assert len(graded) == len(pool)
    assert all(1 <= r["teacher_score"] <= 10 and 1 <= r["student_score"] <= 10 for r in graded)
    # expected scores are continuous: not every grade is a whole number
    assert any(r["teacher_score"] != round(r["teacher_score"]) for r in graded)
    assert {"teacher", "student", "judge"} <= set(summary["usage"])
    # The engine honoured every field tapir sent.
    (log,) = logs.values()
    assert not ignored_request_fields(log), ignored_request_fields(log)[:3]
    assert "structured_outputs" not in " ".join(ignored_request_fields(log))


def test_checkpoints_served_by_vllm_in_the_closed_loop_and_in_eval(tmp_path, vllm_env):
    """``tapir distill`` with a student on vLLM (a tiny random Llama: it trains in seconds) and
    ``training.rescore_backend: vllm``: after the warm-up round the checkpoint answers the pool
    again from its own vLLM engine; then ``tapir eval`` answers through vLLM with round 1."""
    seeds = Path(seed_file(tmp_path)).read_text().splitlines()
    corpus = [json.loads(line)["instruction"] for line in seeds] + ["### Instruction:\n", "### Response:\n"]
    tiny = build_tiny_student(tmp_path / "tiny", corpus, context=4096, heads=2)  # MT-Bench fits
    scripted = {"backend": "scripted", "model": "canned"}
    student = {
        "backend": "vllm",
        "model": str(tiny),
        "context_length": 4096,
        "generation": {"max_new_tokens": 8},
    }
    recipe = make_recipe(
        tmp_path,
        teacher=scripted,
        judge=scripted,
        student=student,
        curriculum={"rounds": 1, "hard_share": [0.5], "warmup_size": 2},
        training={
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "max_length": 128,
            "learning_rate": 1e-3,
            "rescore_backend": "vllm",
        },
        evaluation={
            "backend": "vllm",
            "batch_size": 4,
            "judge": scripted,
            "alpaca_eval": {
                "reference": reference(tmp_path),
                "difficulty": difficulty(tmp_path),
                "max_new_tokens": 8,
            },
            "mt_bench": shared_mt_bench(),
        },
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    done = tapir("distill", "--recipe", path, env_extra=ENGINE_ENV, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    train_dir = recipe.resolved_train_dir
    rescored = train_dir / "warmup" / "rescored"
    manifest = json.loads((rescored / "manifest.json").read_text())
    assert manifest["models"]["student"]["backend"] == "vllm"
    assert manifest["models"]["student"]["model"].startswith(str(train_dir / "warmup" / "model") + "@")
    usage = json.loads((rescored / "summary.json").read_text())["usage"]
    assert usage["student"]["calls"] == len(pool_rows(rescored)) > 0
    assert "failed_calls" not in usage["student"] or not usage["student"]["failed_calls"]

    done = tapir("eval", "--recipe", path, "--models", "round_1", env_extra=ENGINE_ENV, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((recipe.resolved_eval_dir / "summary.json").read_text())
    generation = summary["results"]["round_1"]["generation"]
    assert generation["backend"] == "vllm" and generation["generated"] > 0

    # the data pass's student, the warm-up checkpoint (re-score) and round 1 (eval): each its
    # own vLLM engine, and none ignored a field tapir sent
    logs = engine_logs(tmp_path)  # distill keeps its engines' logs in the training folder
    assert len(logs) >= 3, sorted(logs)
    for name, log in logs.items():
        assert not ignored_request_fields(log), (name, ignored_request_fields(log)[:3])


INSTRUCTIONS = ["Give three tips for staying healthy.", "Write a haiku about autumn leaves."]


def reference(tmp_path: Path) -> str:
    rows = [
        {"instruction": i, "output": f"A reference answer to: {i}", "generator": "ref"} for i in INSTRUCTIONS
    ]
    (tmp_path / "reference.json").write_text(json.dumps(rows))
    return str(tmp_path / "reference.json")


def difficulty(tmp_path: Path) -> str:
    lines = ["", *(f"{n},{0.1 * n}" for n in range(len(INSTRUCTIONS)))]
    (tmp_path / "difficulty.csv").write_text(",instruction_difficulty\n" + "\n".join(lines[1:]) + "\n")
    return str(tmp_path / "difficulty.csv")


def pool_rows(folder: Path) -> list[dict]:
    return datasets.load_dataset(
        "parquet", data_files=str(folder / "data/pool.parquet"), split="train"
    ).to_list()
