"""One tested parser per LLM output format.

Every parser returns a :class:`Parsed`: either a value or the reason it failed. Callers store
the reason in an ``*_error`` column and the run summary counts them, so a failed parse is never
silently turned into ``None``, ``0`` or ``-1``.
"""

from __future__ import annotations

import re

from tapir.grades import RATING_PATTERNS, Parsed, blank, parse_judge_score

__all__ = ["RATING_PATTERNS", "Parsed", "parse_judge_score"]  # the grade parsers live in the core

# Markers a base model emits when it runs past its turn in tapir's chat template.
_TURN_MARKERS = re.compile(r"\n*###\s*(Instructions?|Response|Input)\s*:", re.IGNORECASE)
_LEADING_LABEL = re.compile(
    r"^\s*(new instruction|instruction|refined response|improved response|response|answer|task)\s*:\s*",
    re.IGNORECASE,
)


def cut_at_turn_marker(text: str) -> str:
    """Drop anything after the model starts a new turn on its own (base models do)."""
    match = _TURN_MARKERS.search(text)
    return text[: match.start()] if match else text


def parse_task_label(text: str | None, labels: list[str]) -> Parsed[str]:
    """Map a classifier answer onto one taxonomy label.

    An exact (case-insensitive) answer wins; otherwise the label mentioned first in the text,
    preferring longer labels at the same position ("Code Debug" over "Code"). Anything else is
    a failure: guessing a default label would hide a broken classifier.
    """
    if reason := blank(text):
        return Parsed(error=reason)
    assert text is not None
    cleaned = _LEADING_LABEL.sub("", text.strip()).strip().strip("\"'`*.").strip()
    by_lower = {label.lower(): label for label in labels}
    if cleaned.lower() in by_lower:
        return Parsed(value=by_lower[cleaned.lower()])
    hits = []
    lowered = text.lower()
    for label in labels:
        match = re.search(rf"(?<![\w-]){re.escape(label.lower())}(?![\w-])", lowered)
        if match:
            hits.append((match.start(), -len(label), label))
    if hits:
        return Parsed(value=min(hits)[2])
    snippet = cleaned[:40].replace("\n", " ")
    return Parsed(error=f"not a known task label: {snippet!r}")


def parse_response(text: str | None) -> Parsed[str]:
    """A generated answer: non-empty text, cut where the model starts another turn."""
    if reason := blank(text):
        return Parsed(error=reason)
    assert text is not None
    answer = cut_at_turn_marker(text).strip()
    if not answer:
        return Parsed(error="empty output after removing a new-turn marker")
    return Parsed(value=answer)


def parse_expanded_instruction(text: str | None, seed_instruction: str | None = None) -> Parsed[str]:
    """A new instruction written from a hard seed: one non-trivial instruction, not the seed."""
    if reason := blank(text):
        return Parsed(error=reason)
    assert text is not None
    body = cut_at_turn_marker(text).strip()
    body = _LEADING_LABEL.sub("", body).strip().strip("\"'").strip()
    if not body:
        return Parsed(error="empty instruction")
    if len(body.split()) < 3:
        return Parsed(error=f"too short to be an instruction: {body!r}")
    if seed_instruction is not None and body.strip().lower() == seed_instruction.strip().lower():
        return Parsed(error="copy of the seed instruction")
    return Parsed(value=body)


def parse_refined_response(text: str | None) -> Parsed[str]:
    """A teacher's rewrite of a response: non-empty text, without a leading label."""
    parsed = parse_response(text)
    if not parsed.ok:
        return parsed
    assert parsed.value is not None
    body = _LEADING_LABEL.sub("", parsed.value).strip()
    if not body:
        return Parsed(error="empty refined response")
    return Parsed(value=body)
