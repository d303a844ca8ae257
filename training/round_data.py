"""Read one curriculum round as a chat dataset for TRL, refusing what cannot be trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tapir.errors import DataError
from tapir.manifest import error_line


def parquet_rows(path: Path) -> int:
    """Rows of a parquet file from its footer (0 when the file does not exist)."""
    if not path.is_file():
        return 0
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path.stem}: cannot read {path} ({error_line(exc)})") from None


def check_round_file(path: Path, name: str) -> int:
    """Row count of a round file; one error line if it is missing or empty."""
    if not path.is_file():
        raise DataError(f"{name}: round file missing: {path} (run `make data` first)")
    rows = parquet_rows(path)
    if rows == 0:
        raise DataError(
            f"{name}: {path} has no rows; the curriculum left this round empty "
            "(see the data run's summary: more seeds, a lower difficulty.delta or curriculum.round_size)"
        )
    _check_messages_column(path, name)
    return rows


def _check_messages_column(path: Path, name: str) -> None:
    """The round's ``messages`` are lists of {role, content} turns, as ``tapir data`` writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if "messages" not in schema.names:
        raise DataError(f"{name}: {path} has no 'messages' column (columns: {', '.join(schema.names)})")
    kind = schema.field("messages").type
    turns = kind.value_type if pa.types.is_list(kind) or pa.types.is_large_list(kind) else None
    if turns is None or not pa.types.is_struct(turns) or not {"role", "content"} <= {f.name for f in turns}:
        raise DataError(f"{name}: {path}: 'messages' is {kind}, not a list of {{role, content}} turns")


def load_round(path: Path, name: str) -> Any:
    """``messages`` rows of a round file written by ``tapir data``.

    Read with the ``parquet`` builder and explicit ``data_files``: ``datasets`` caches a folder
    load by its path and would hand back stale rows after ``make data`` rewrote the folder.
    """
    import datasets

    check_round_file(path, name)
    try:
        dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{name}: cannot read {path} ({exc})") from None
    if "messages" not in dataset.column_names:
        raise DataError(f"{name}: {path} has no 'messages' column (not written by `tapir data`?)")
    for number, messages in enumerate(dataset["messages"]):
        roles = [m.get("role") for m in messages or []]
        if "assistant" not in roles or not all(str(m.get("content") or "").strip() for m in messages):
            raise DataError(f"{name}: {path} row {number} has no assistant answer or an empty message")
    return dataset.select_columns(["messages"])
