"""JSON read strictly: an object that names one key twice is an error, not its last value.

Python's ``json`` (and pandas) keep the last of two equal keys without a word, so a seed row or
a judgment written twice over would be read as whichever copy came last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice: which value was meant is unknowable."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses an object naming a key twice (json keeps the last silently)."""
    return json.loads(text, object_pairs_hook=_no_duplicate_keys)


def json_lines(text: str, where: str) -> list[tuple[int, Any]]:
    """(line number, value) for each non-blank line of ``text``, read with :func:`strict_json`;
    a line that is not JSON, or names a key twice, is one error line naming ``where`` and it."""
    from tapir.errors import DataError

    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append((number, strict_json(line)))
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} line {number} is not valid JSON ({exc.msg})") from None
        except DuplicateKeyError as exc:
            raise DataError(f"{where} line {number}: {exc}") from None
    return values


def read_text(path: Path, field: str, location: str | Path) -> str:
    """A user's file as UTF-8 text, read once (a pipe too), or one error line naming ``field``."""
    from tapir.errors import DataError

    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{field}: {location} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{field}: cannot read {location} ({exc.strerror or type(exc).__name__})") from None
