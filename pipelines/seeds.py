"""Load and validate the seed pool (METHOD step 1).

Sources: tapir's embedded pool, a local JSON/JSONL/Parquet file, or a Hub dataset id (users
have the internet; here only local files are read). Bad input fails here, before any LLM
call, with one line naming the file and column.
"""

from __future__ import annotations

import json
import random
import unicodedata
from importlib.resources import files
from pathlib import Path
from typing import Any

from tapir.errors import DataError
from tapir.json_text import DuplicateKeyError, json_lines, read_text, strict_json
from tapir.recipe import SeedSource

LOCAL_SUFFIXES = frozenset({".json", ".jsonl", ".parquet"})


def embedded_seed_path() -> Path:
    return Path(str(files("tapir.pipelines").joinpath("seeds/embedded_seeds.jsonl")))


def describe_source(source: SeedSource) -> tuple[str, str]:
    """("embedded" | "local" | "hub", location)."""
    if source.source == "embedded":
        return "embedded", str(embedded_seed_path())
    path = Path(source.source).expanduser()
    if path.suffix.lower() in LOCAL_SUFFIXES or path.exists() or source.source.startswith((".", "/", "~")):
        return "local", str(path)
    return "hub", source.source


def read_local(path: Path, location: str, field: str = "seeds.source") -> list[dict[str, Any]]:
    """Read a local seed file directly: no copy into the datasets cache, line-numbered errors."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise DataError(f"{field}: cannot read {location}: {str(exc).splitlines()[0]}") from None
    text = read_text(path, field, location)
    if suffix == ".json" and text.lstrip().startswith("{"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # JSON Lines in a .json file: read line by line below
        if isinstance(whole, dict):
            raise DataError(
                f"{field}: {location} holds one JSON object; seeds are a list of objects "
                "(a JSON array, or one object per line)"
            )
    if suffix == ".jsonl" or (suffix == ".json" and not text.lstrip().startswith("[")):
        rows = [value for _, value in json_lines(text, f"{field}: {location}")]
    else:
        try:
            rows = strict_json(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{field}: {location} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
        except DuplicateKeyError as exc:
            raise DataError(f"{field}: {location}: {exc}") from None
    if not isinstance(rows, list):
        raise DataError(f"{field}: {location} must hold a list of JSON objects")
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(
                f"{field}: row {number} of {location} is a {type(row).__name__}, not a JSON object"
            )
    return rows


def check_seed_file(path: Path, location: str) -> None:
    """A regular file: a pipe (``<(...)``, /dev/stdin) is refused as such, since a data pass reads
    its seeds more than once and records their sha256 in the manifest."""
    if "\x00" in location:
        raise DataError("seeds.source: the path holds a NUL byte")
    if path.exists() and not path.is_file() and not path.is_dir():
        raise DataError(
            f"seeds.source: {location} is a pipe or device, not a file; tapir reads the seeds more "
            "than once and records their sha256, so save them to a file first"
        )
    if not path.is_file():
        raise DataError(f"seeds.source: file not found: {location}")


def _read_rows(source: SeedSource) -> list[dict[str, Any]]:
    kind, location = describe_source(source)
    if kind in ("embedded", "local"):
        path = Path(location)
        check_seed_file(path, location)
        if path.suffix.lower() not in LOCAL_SUFFIXES:
            raise DataError(f"seeds.source: {location}: unsupported format (use .json, .jsonl or .parquet)")
        return read_local(path, location)
    import datasets

    try:
        dataset = datasets.load_dataset(location, split=source.split)
    except Exception as exc:  # datasets raises many types (network, missing split, format)
        raise DataError(
            f"seeds.source: cannot load Hub dataset {location!r} (split {source.split!r}): "
            f"{str(exc).splitlines()[0]}"
        ) from None
    return [dict(row) for row in dataset]


def _input_of(row: dict[str, Any], column: str | None) -> str:
    if column and column in row and row[column] is not None:
        return str(row[column])
    instances = row.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        return str(instances[0].get("input") or "")
    return ""


# Characters that show nothing: an instruction of only these is empty, whatever its length.
# Combining marks (Mn, Mc, Me) only decorate a character before them: alone they say nothing.
_BLANK_CATEGORIES = {"Cc", "Cf", "Cn", "Co", "Cs", "Zs", "Zl", "Zp", "Mn", "Mc", "Me"}
_FILLERS = {"\u115f", "\u1160", "\u2800", "\u3164", "\uffa0"}


def visible(text: str) -> bool:
    """Whether ``text`` has a character a reader would see (not only spaces, zero-width
    characters, control characters, combining marks or Hangul/Braille fillers)."""
    return any(
        not ch.isspace() and ch not in _FILLERS and unicodedata.category(ch) not in _BLANK_CATEGORIES
        for ch in text
    )


def _check_unicode(text: str, where: str) -> None:
    """JSON can carry a lone surrogate (``"\\ud800"``), which no file or model can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(
            f"seeds: {where} holds an unpaired surrogate ({text[exc.start]!r} at character "
            f"{exc.start}), which is not text; fix the file"
        ) from None


def _row_id(row: dict[str, Any], column: str, number: int, location: str) -> str:
    value = row.get(column)
    if isinstance(value, (dict, list, bool)) or value is None or not str(value).strip():
        shown = "empty" if value is None or not str(value).strip() else f"a {type(value).__name__}"
        raise DataError(f"seeds.id_column: row {number} of {location} has {shown} {column!r}, not an id")
    text = str(value).strip()
    _check_unicode(text, f"row {number} of {location}: {column!r}")
    return text


def load_seeds(source: SeedSource, seed: int) -> list[dict[str, Any]]:
    """Rows ``{id, instruction, input, origin, parent_id}``; raises :class:`DataError`."""
    rows = _read_rows(source)
    _, location = describe_source(source)
    if not rows:
        raise DataError(f"seeds.source: {location} has no rows")
    columns = set(rows[0])
    if source.instruction_column not in columns:
        raise DataError(
            f"seeds.instruction_column: column {source.instruction_column!r} not in {location} "
            f"(columns: {', '.join(sorted(columns))})"
        )
    if source.id_column and source.id_column not in columns:
        raise DataError(f"seeds.id_column: column {source.id_column!r} not in {location}")

    seeds: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], int] = {}
    ids: dict[str, int] = {}
    for number, row in enumerate(rows):
        instruction = row.get(source.instruction_column)
        if instruction is not None and not isinstance(instruction, str):
            raise DataError(
                f"seeds: row {number} of {location}: {source.instruction_column!r} is a "
                f"{type(instruction).__name__}, not text"
            )
        if instruction is None or not visible(instruction):
            raise DataError(f"seeds: row {number} of {location} has an empty {source.instruction_column!r}")
        _check_unicode(instruction, f"row {number} of {location}: {source.instruction_column!r}")
        text = instruction.strip()
        raw_input = row.get(source.input_column) if source.input_column else None
        if isinstance(raw_input, (dict, list)):
            raise DataError(
                f"seeds: row {number} of {location}: {source.input_column!r} is a "
                f"{type(raw_input).__name__}, not text"
            )
        extra = _input_of(row, source.input_column).strip()
        _check_unicode(extra, f"row {number} of {location}: {source.input_column!r}")
        if len(text) + len(extra) > source.max_chars:
            raise DataError(
                f"seeds: row {number} of {location} is {len(text) + len(extra):,} characters long; "
                f"seeds.max_chars allows {source.max_chars:,} (raise it if your models' context can)"
            )
        key = (" ".join(text.lower().split()), " ".join(extra.lower().split()))
        if key in seen:
            raise DataError(
                f"seeds: rows {seen[key]} and {number} of {location} have the same instruction "
                f"and input: {text[:60]!r}"
            )
        seen[key] = number
        row_id = (
            _row_id(row, source.id_column, number, location) if source.id_column else f"seed-{number:06d}"
        )
        if row_id in ids:
            raise DataError(
                f"seeds.id_column: rows {ids[row_id]} and {number} of {location} have the same id "
                f"{row_id!r} (ids name rows through every stage: they must be unique)"
            )
        ids[row_id] = number
        seeds.append(
            {
                "id": row_id,
                "instruction": text,
                "input": extra,
                "origin": "seed",
                "parent_id": "",
                "placeholder": False,
            }
        )

    if source.shuffle:
        random.Random(seed).shuffle(seeds)
    if source.limit is not None:
        seeds = seeds[: source.limit]
    return seeds


def count_seeds_offline(source: SeedSource) -> tuple[int | None, str]:
    """Seed count for --dry-run without network: read local files, trust the recipe for the Hub."""
    kind, location = describe_source(source)
    if kind == "hub":
        count = source.expected_rows
        note = "from seeds.expected_rows" if count else "unknown (set seeds.expected_rows)"
    else:
        path = Path(location)
        check_seed_file(path, location)
        count = len(load_seeds(source.model_copy(update={"limit": None}), seed=0))
        note = f"counted in {location}"
    if count is not None and source.limit is not None:
        count = min(count, source.limit)
    return count, note
