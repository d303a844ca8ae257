"""The evaluation judge on the real Gemma 3 270M (slow tier): a prompt longer than its context is
counted, not fatal. `make eval` on the embedded default runs in tests/test_clean_clone_slow.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_a_prompt_too_long_for_the_judge_is_counted_not_fatal(tmp_path):
    from tapir.evaluation.judging import JudgeStats, build_judges
    from tapir.recipe import ModelSpec
    from tapir.serving.llm_factory import LLMContext, choice_constraint

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
