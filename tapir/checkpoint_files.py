"""Is a model folder whole? A cheap look at its weight files before anything loads them.

A ``model.safetensors`` cut short (a copy that ran out of disk, a download stopped half-way)
made ``tapir eval`` end in a traceback from deep inside the loader. Its header says how long the
file must be, so checking costs a few bytes of reading, not a load.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# A header longer than this is not one (safetensors caps it at 100 MB).
_MAX_HEADER = 100_000_000


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None when it is."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes, no header)"
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER or 8 + length > size:
                return f"truncated or not safetensors (header of {length:,} bytes in a {size:,}-byte file)"
            header = json.loads(handle.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"unreadable header ({type(exc).__name__})"
    if not isinstance(header, dict):
        return "unreadable header (not a JSON object)"
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)
    ]
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"truncated ({size:,} of {needed:,} bytes)"
    return None


def damaged_weights(folder: Path) -> str | None:
    """``file: why`` for the first damaged weight file in a model folder, or None."""
    for path in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            return f"{path}: {problem}"
    return None
