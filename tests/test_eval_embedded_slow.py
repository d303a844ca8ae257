"""`tapir eval` with the embedded default recipe (slow tier): the real Gemma 3 270M answers and
judges through one llama.cpp engine (tapir's template; grammar-constrained verdicts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tapir.evaluation import html_report

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_default_recipe_eval_on_the_embedded_model(tmp_path):
    sets = [
        f"output_dir={tmp_path / 'run'}",
        "evaluation.models=[student]",
        "evaluation.alpaca_eval.limit=3",
        "evaluation.alpaca_eval.max_new_tokens=24",
        "evaluation.mt_bench.max_new_tokens=24",
    ]
    command = [sys.executable, "-m", "tapir.cli", "eval", "--recipe", "recipes/default.yaml"]
    for item in sets:
        command += ["--set", item]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "run-eval"
    board = pd.read_csv(out / "leaderboard.csv")
    student = board[board["model"] == "student"].iloc[0]
    assert student["n_total"] == 3  # the grammar lets the tiny judge answer only "m" or "M"
    assert 0 <= student["win_rate"] <= 100
    assert 1 <= student["mt_bench"] <= 10
    assert student["judge_parse_failures"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"]["student"]["generation"]["backend"] == "llamacpp:Q4_K_M"
    health = summary["results"]["student"]["alpaca_eval"]["judge_health"]
    assert health["judgments"] == 3 and set(health["usage"]) >= {"calls", "input_tokens", "output_tokens"}
    assert summary["results"]["student"]["alpaca_eval"]["metrics"]["length_controlled_winrate"] is None
    assert summary["results"]["student"]["mt_bench"]["metrics"]["n_judgments"] == 16
    if html_report.chromium_binary() or os.environ.get("CI"):
        assert html_report.check_renders(out / "report.html")["rendered"] == "yes"


def test_a_prompt_too_long_for_the_judge_is_counted_not_fatal(tmp_path):
    from tapir.evaluation.judging import JudgeStats, build_judges
    from tapir.llm_factory import LLMContext, choice_constraint
    from tapir.recipe import ModelSpec

    context = LLMContext(cache_dir=REPO / ".cache" / "tapir", usage_dir=tmp_path)
    judge = build_judges(
        ModelSpec(backend="llamacpp", model="embedded", context_length=512),
        context,
        {"pairs": (2, choice_constraint(["m", "M"]))},
        constrain=True,
        batch_size=4,
        retries=1,
    )["pairs"]
    context.engine_set().start()
    short = [{"role": "user", "content": "Answer m or M."}]
    long = [{"role": "user", "content": "word " * 3000 + "Answer m or M."}]
    stats = JudgeStats()
    verdicts = judge.judge([short, long], lambda text: text if text in ("m", "M") else None, stats)
    assert verdicts[0].value in ("m", "M")
    assert verdicts[1].value is None and verdicts[1].text == ""
    assert stats.call_errors == 2  # the first ask and the retry
    assert stats.parse_failures == 1 and "prompt too long" in stats.last_error  # counted as such
    context.engine_set().stop()
