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


#: The weight files a transformers (or PEFT adapter) folder may hold, in the order loaders look.
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.pt", "*.pth")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def model_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a whole model folder (``file: why``), or None: a config that parses
    as a model's, weight files present, every shard an index names present, every safetensors
    file as long as its header says. What a push or an evaluation would otherwise find after
    uploading or loading half of it."""
    config = folder / "config.json"
    if not config.is_file():
        return f"{folder}: not a transformers model folder (no config.json)"
    for path in (config, folder / "adapter_config.json"):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            return f"{path}: unreadable ({type(exc).__name__}: truncated or not JSON)"
        if not isinstance(data, dict) or not data:
            return f"{path}: not a model configuration (an empty or non-object JSON)"
        if path == config and "model_type" not in data and "architectures" not in data:
            return f"{path}: not a model configuration (no model_type or architectures)"
    for index_name in SHARD_INDEXES:
        index = folder / index_name
        if not index.is_file():
            continue
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"{index}: unreadable shard index ({type(exc).__name__})"
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            return f"{index}: names {len(missing)} shard(s) that are not there ({missing[0]}, ...)"
    weights = [p for pattern in WEIGHT_GLOBS for p in sorted(folder.glob(pattern))]
    if not weights:
        return f"{folder}: no weight files (*.safetensors, pytorch_model*.bin)"
    empty = [p for p in weights if p.stat().st_size == 0]
    if empty:
        return f"{empty[0]}: empty (0 bytes)"
    return damaged_weights(folder)
