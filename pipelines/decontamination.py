"""Keep the benchmarks' prompts out of the training data.

A row whose instruction, input or teacher response matches an AlpacaEval 2.0 instruction or an
MT-Bench turn is excluded before re-balancing (``excluded_reason``: ``contaminated: <benchmark>
(<how>)``) and counted per benchmark. Three tests, cheapest first: the exact text, the text
normalised (case, Unicode form, punctuation and spacing ignored), and any shared word n-gram
(13 by default, as open-instruct's decontamination does) — the last catches a benchmark prompt
embedded in a longer instruction or quoted in a response.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from tapir.errors import DataError

_WORD = re.compile(r"\w+", re.UNICODE)
#: The text of a row that is checked.
CHECKED_COLUMNS = ("instruction", "input", "teacher_response")


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def normalised(text: str) -> str:
    return " ".join(words(text))


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class BenchmarkIndex:
    """Every benchmark prompt, three ways: exact text, normalised text, word n-grams. A prompt
    that is in two benchmarks (AlpacaEval carries some of MT-Bench's) is counted for both."""

    def __init__(self, benchmarks: dict[str, list[str]], n: int = 13) -> None:
        self.n = n
        self.exact: dict[str, set[str]] = {}
        self.normal: dict[str, set[str]] = {}
        self.grams: dict[tuple[str, ...], set[str]] = {}
        for name, texts in benchmarks.items():
            for text in texts:
                if not text or not text.strip():
                    continue
                self.exact.setdefault(text.strip(), set()).add(name)
                self.normal.setdefault(normalised(text), set()).add(name)
                for gram in ngrams(words(text), n):
                    self.grams.setdefault(gram, set()).add(name)

    def match(self, text: str | None) -> tuple[str, str] | None:
        """(benchmarks joined by '+', how) for the first test ``text`` fails, else None."""
        if not text or not text.strip():
            return None
        if (names := self.exact.get(text.strip())) is not None:
            return "+".join(sorted(names)), "exact"
        if (names := self.normal.get(normalised(text))) is not None:
            return "+".join(sorted(names)), "normalised"
        found = set().union(*(self.grams.get(g, set()) for g in ngrams(words(text), self.n)))
        return ("+".join(sorted(found)), f"{self.n}-gram") if found else None

    def check_row(self, row: dict[str, Any]) -> str | None:
        """``contaminated: <benchmark> (<how>, <column>)`` for a row that matches, else None."""
        for column in CHECKED_COLUMNS:
            found = self.match(row.get(column))
            if found is not None:
                return f"contaminated: {found[0]} ({found[1]}, {column})"
        return None


def benchmark_texts(
    alpaca_eval: str | None, mt_bench: str | None, cache_dir: str | Path
) -> dict[str, list[str]]:
    """The prompts to keep out: AlpacaEval instructions and every MT-Bench turn."""
    from tapir.benchmark_sources import read_records, resolve

    texts: dict[str, list[str]] = {}
    if alpaca_eval is not None:
        field = "decontamination.alpaca_eval"
        rows = read_records(resolve(alpaca_eval, field, cache_dir), field)
        texts["alpaca_eval"] = [
            str(r["instruction"]) for r in rows if isinstance(r, dict) and r.get("instruction")
        ]
        if not texts["alpaca_eval"]:
            raise DataError(f"{field}: {alpaca_eval} holds no 'instruction' values")
    if mt_bench is not None:
        field = "decontamination.mt_bench"
        rows = read_records(resolve(mt_bench, field, cache_dir), field)
        texts["mt_bench"] = [str(t) for r in rows if isinstance(r, dict) for t in r.get("turns") or []]
        if not texts["mt_bench"]:
            raise DataError(f"{field}: {mt_bench} holds no question 'turns'")
    return texts


def write_benchmark_file(texts: dict[str, list[str]], folder: Path) -> Path:
    """The prompts as one JSON file named by its content (the decontamination step's signature)."""
    import hashlib

    blob = json.dumps(texts, sort_keys=True, ensure_ascii=False).encode("utf-8")
    path = folder / f"benchmarks-{hashlib.sha256(blob).hexdigest()[:16]}.json"
    if not path.is_file():
        from tapir.staging import atomic_file

        with atomic_file(path) as partial:
            partial.write_bytes(blob)
    return path


def counts(pool: list[dict[str, Any]]) -> dict[str, int]:
    """Rows excluded as contaminated, per benchmark (a row in two benchmarks counts for each)."""
    found: dict[str, int] = {}
    for row in pool:
        reason = str(row.get("excluded_reason") or "")
        if reason.startswith("contaminated: "):
            for name in reason.removeprefix("contaminated: ").split(" ", 1)[0].split("+"):
                found[name] = found.get(name, 0) + 1
    return found
