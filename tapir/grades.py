"""A judge's single-answer grade, read the way fschat reads it (the number written) -- shared by
the data pass's MFD judge and the evaluation's MT-Bench judge; ``tapir.expected_score`` reads
the same grade as an expectation over the rating tokens.

Every parser returns a :class:`Parsed`: a value, or the reason it failed, so a failed parse is
counted and never turned into ``None``, ``0`` or ``-1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# fschat's llm_judge patterns (common.py): "[[rating]]" first, then a single-bracket backup.
_ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
# Judges that drop the brackets still tend to write "Rating: 7".
_RATING_WORD = re.compile(r"rating\s*[:=]\s*(\d+\.?\d*)", re.IGNORECASE)
RATING_PATTERNS = (_ONE_SCORE, _ONE_SCORE_BACKUP, _RATING_WORD)  # in the order they are tried


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """A parse result: ``value`` when ``error`` is None, else ``error`` says why it failed."""

    value: T | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def blank(text: str | None) -> str | None:
    if text is None:
        return "no output (the LLM call failed)"
    if not text.strip():
        return "empty output"
    return None


def parse_judge_score(text: str | None, low: float = 1, high: float = 10) -> Parsed[float]:
    """Read a single-answer grade the way fschat does: ``[[7]]``, then ``[7]``, then ``Rating: 7``."""
    if reason := blank(text):
        return Parsed(error=reason)
    assert text is not None
    for pattern in RATING_PATTERNS:
        match = pattern.search(text)
        if match:
            score = float(match.group(1))
            if not low <= score <= high:
                return Parsed(error=f"score {match.group(1)} outside {low:g}-{high:g}")
            return Parsed(value=score)
    return Parsed(error="no rating found")
