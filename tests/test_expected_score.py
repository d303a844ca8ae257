"""Expected judge scores from given log-probabilities (G-Eval): the arithmetic, the split of a
"1" that may begin a "10", and every way an answer can fail to give one (counted, never 0)."""

from __future__ import annotations

import math

import pytest
from distilabel.models.llms.base import LLM

from tapir.expected_score import expected_score
from tapir.pipelines.tasks import ResponseJudge
from tapir.serving.llms import CACHE_KEY, TOP_LOGPROBS


def _tokens(prefix: str, written: str, top: dict[str, float], after: dict[str, float] | None = None):
    """The judge wrote ``prefix``, then ``written`` at the rating position (with ``top``), then "]]"."""
    closing = {"token": "]]", "top": [[t, math.log(p)] for t, p in (after or {"]]": 1.0}).items()]}
    return [
        {"token": prefix, "top": [[prefix, 0.0]]},
        {"token": written, "top": [[t, math.log(p)] for t, p in top.items()]},
        closing,
    ]


def test_expected_score_is_the_probability_weighted_mean_over_rating_tokens():
    parsed = expected_score(_tokens("Rating: [[", "7", {"7": 0.5, "8": 0.3, "6": 0.2}))
    assert parsed.ok
    assert parsed.value.value == pytest.approx(0.5 * 7 + 0.3 * 8 + 0.2 * 6)
    assert parsed.value.mass == pytest.approx(1.0)


def test_non_rating_alternatives_are_left_out_and_the_rest_renormalised():
    parsed = expected_score(_tokens("Rating: [[", "4", {"4": 0.4, "The": 0.4, "5": 0.1, "42": 0.1}))
    assert parsed.value.value == pytest.approx((0.4 * 4 + 0.1 * 5) / 0.5)
    assert parsed.value.mass == pytest.approx(0.5)


def test_a_written_one_splits_its_mass_between_1_and_10_by_the_next_position():
    tokens = _tokens("Rating: [[", "1", {"1": 0.8, "9": 0.2}, after={"0": 0.75, "]]": 0.25})
    tokens[2]["token"] = "0"
    tokens.append({"token": "]]", "top": [["]]", 0.0]]})
    parsed = expected_score(tokens)
    assert parsed.value.value == pytest.approx(0.8 * 0.75 * 10 + 0.8 * 0.25 * 1 + 0.2 * 9)
    assert not parsed.value.ten_unresolved


def test_an_unwritten_one_counts_as_1_and_says_so():
    parsed = expected_score(_tokens("Rating: [[", "6", {"6": 0.5, "1": 0.5}))
    assert parsed.value.value == pytest.approx(3.5)
    assert parsed.value.ten_unresolved


def test_a_single_ten_token_is_ten():
    parsed = expected_score(_tokens("Rating: [[", "10", {"10": 0.5, "9": 0.5}))
    assert parsed.value.value == pytest.approx(9.5)
    assert not parsed.value.ten_unresolved


def test_rating_inside_a_longer_token_keeps_its_prefix():
    tokens = [
        {"token": "The answer is fine. Rating:", "top": [["The", -0.1]]},
        {"token": " 8", "top": [[" 8", math.log(0.5)], [" 9", math.log(0.5)], ["8", math.log(0.2)]]},
    ]
    assert expected_score(tokens).value.value == pytest.approx(8.5)


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        (None, "no log-probabilities"),
        ([], "no log-probabilities"),
        ([{"token": "I cannot grade this.", "top": []}], "no rating found"),
        (_tokens("Rating: [[", "5", {"The": 0.6, "A": 0.4}), "no rating among the top"),
    ],
)
def test_no_usable_log_probabilities_is_a_reason_not_a_number(tokens, reason):
    parsed = expected_score(tokens)
    assert not parsed.ok and parsed.value is None
    assert reason in parsed.error


class _NoCalls(LLM):
    """The judge task's LLM when only its parsing is under test: never called."""

    def load(self) -> None:
        pass

    @property
    def model_name(self) -> str:
        return "no-calls"

    def generate(self, *args, **kwargs):  # type: ignore[override]
        raise AssertionError("the parsing test made an LLM call")


def _judge(scoring: str) -> ResponseJudge:
    return ResponseJudge(
        name=f"judge_{scoring}", llm=_NoCalls(), template="{{ instruction }} {{ response }}", scoring=scoring
    )


def test_judge_task_scores_expected_and_keeps_the_written_grade():
    written = "Rating: [[7]]"
    outputs = {
        "generations": [written, "Rating: [[3]]", "no verdict"],
        "statistics": {},
        TOP_LOGPROBS: [_tokens("Rating: [[", "7", {"7": 0.5, "9": 0.5}), None, None],
        CACHE_KEY: "k",
    }
    rows = _judge("expected")._format_outputs(dict(outputs), {"instruction": "x", "response": "y"})
    assert rows[0]["score"] == pytest.approx(8.0) and rows[0]["written_score"] == 7
    assert rows[1]["score"] is None and "expected score: no log-probabilities" in rows[1]["score_error"]
    assert rows[2]["score"] is None and rows[2]["score_error"] == "no rating found"
    sampled = _judge("sampled")._format_outputs(dict(outputs), {"instruction": "x", "response": "y"})
    assert [r["score"] for r in sampled] == [7, 3, None]
