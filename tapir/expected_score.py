"""A judge's grade as an expectation over its rating tokens (G-Eval), not one sampled number.

A sampled grade is one draw: a tiny judge at temperature 1 gives the same answer a different
grade run to run, and greedy decoding gives every answer the same grade. G-Eval (Liu et al.,
2023) scores with the probabilities of the rating tokens instead: score = sum_k p(k) * k, over
the ratings ``low..high`` that appear among the position's top log-probabilities, renormalised.
MFD then becomes continuous, and two runs with different seeds grade alike.

The input is what tapir's engine client keeps of an OpenAI-style ``logprobs.content``: per
generated token, its text and the top alternatives at that position, as ``[text, logprob]``.

Multi-digit ratings: tokenizers that split numbers into digits (Llama, Gemma) write 10 as
"1" then "0", so the mass of "1" at the rating position belongs to 1 and 10 together. When the
judge wrote "1", the next position says how it splits ("0" against a closing bracket); when it
wrote another digit, nothing says, and the mass of "1" counts as 1 (``ten_unresolved`` says so).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from tapir.grades import RATING_PATTERNS, Parsed

TokenLogprobs = list[dict[str, Any]]  # [{"token": str, "top": [[str, float], ...]}, ...]


@dataclass(frozen=True)
class ExpectedScore:
    """An expected grade: ``value``; ``mass``, the probability the top alternatives give to valid
    ratings (how much of the distribution the expectation saw); ``ten_unresolved``, whether the
    digit "1" could also have begun a "10" and was counted as 1."""

    value: float
    mass: float
    ten_unresolved: bool = False


def expected_score(tokens: TokenLogprobs | None, low: int = 1, high: int = 10) -> Parsed[ExpectedScore]:
    """The expected grade from the judge's token log-probabilities, or why there is none."""
    if not tokens:
        return Parsed(error="no log-probabilities returned with the grade")
    text = "".join(str(t.get("token") or "") for t in tokens)
    start = _rating_start(text)
    if start is None:
        return Parsed(error="no rating found")
    offset = 0
    for index, token in enumerate(tokens):
        piece = str(token.get("token") or "")
        if offset <= start < offset + len(piece):
            prefix = piece[: start - offset]
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            return _expectation(token, prefix, following, low, high)
        offset += len(piece)
    return Parsed(error="no rating found")


def _rating_start(text: str) -> int | None:
    """Where the rating's number begins, read as :func:`parse_judge_score` reads it."""
    for pattern in RATING_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.start(1)
    return None


def _expectation(
    token: dict[str, Any], prefix: str, following: dict[str, Any] | None, low: int, high: int
) -> Parsed[ExpectedScore]:
    probabilities: dict[int, float] = {}
    bare_one = 0.0  # a "1" with nothing after it in its token: 1, or the start of 10
    for alternative, logprob in token.get("top") or []:
        alternative = str(alternative)
        if not alternative.startswith(prefix):
            continue
        digits = re.match(r"\s*(\d+)", alternative[len(prefix) :])
        if digits is None:
            continue
        value = int(digits.group(1))
        p = math.exp(float(logprob))
        if value == 1 and high >= 10 and not alternative[len(prefix) + digits.end() :]:
            bare_one += p
        elif low <= value <= high:
            probabilities[value] = probabilities.get(value, 0.0) + p
    ten_unresolved = False
    if bare_one:
        written = str(token.get("token") or "")[len(prefix) :].strip()
        share = _ten_share(following) if written == "1" else None
        if share is None:
            ten_unresolved, share = True, 0.0
        probabilities[10] = probabilities.get(10, 0.0) + bare_one * share
        if low <= 1:
            probabilities[1] = probabilities.get(1, 0.0) + bare_one * (1 - share)
    mass = sum(probabilities.values())
    if mass <= 0:
        top = ", ".join(repr(str(a)) for a, _ in (token.get("top") or [])[:5])
        return Parsed(error=f"no rating among the top log-probabilities ({top})")
    value = sum(k * p for k, p in probabilities.items()) / mass
    return Parsed(value=ExpectedScore(round(value, 4), round(mass, 4), ten_unresolved))


def _ten_share(following: dict[str, Any] | None) -> float | None:
    """After a written "1": the share of "0" (a 10) against a closing bracket (a 1)."""
    if following is None:
        return None
    zero = close = 0.0
    for alternative, logprob in following.get("top") or []:
        alternative = str(alternative)
        if alternative.startswith("0"):
            zero += math.exp(float(logprob))
        elif alternative.startswith("]"):
            close += math.exp(float(logprob))
    if zero + close <= 0:
        return None
    return zero / (zero + close)
