"""tapir's one atomic writer: build a folder or file beside its target, then swap it into place,
so a reader never sees half of it (``atomic_folder``, ``atomic_file``).

A killed run leaves its hidden ``.<name>.partial-<pid>`` (or ``.old-<pid>``) sibling behind;
the next run for the same target removes those whose process is gone, so they do not pile up.

A stage only ever replaces (or writes into) a folder that is absent, empty or marked as an
earlier run of the same stage (``.tapir-output``): ``tapir data --output recipes`` must never
swap the user's recipes away.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tapir.errors import DataError

OUTPUT_MARKER = ".tapir-output"
# Folders written before the marker existed: the file (a glob) that says which stage made them.
_LEGACY_MARKS = {
    "data": "manifest.json",
    "train": "recipe.yaml",
    "eval": "leaderboard.csv",
    "review": "*/push.json",  # a round's folder after `tapir review push`
}


def output_owner(folder: Path) -> str | None:
    """Which tapir stage wrote ``folder`` (``data``, ``train``, ``eval``, ...), or None."""
    marker = folder / OUTPUT_MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text(encoding="utf-8"))["stage"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None
    for stage, pattern in _LEGACY_MARKS.items():
        for path in folder.glob(pattern):
            if path.is_file() and (stage != "data" or _is_data_manifest(path)):
                return stage
    return None


def _is_data_manifest(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("stage") == "data"
    except (ValueError, AttributeError, UnicodeDecodeError):
        return False


def claim_output(folder: Path, stage: str, field: str) -> None:
    """Refuse, with one line naming ``field``, to write ``stage``'s output over what is not ours."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise DataError(f"{field}: {folder} is a file, not a folder tapir wrote; not replacing it")
    if not folder.exists() or not any(folder.iterdir()):
        return
    owner = output_owner(folder)
    if owner == stage:
        return
    if owner is None:
        raise DataError(
            f"{field}: {folder} exists and is not a tapir {stage} folder; not writing into it "
            "(choose another folder, or remove it yourself)"
        )
    raise DataError(f"{field}: {folder} holds a tapir {owner} run; a {stage} run would replace it")


def mark_output(folder: Path, stage: str) -> None:
    """Say that ``folder`` is a tapir ``stage`` output (the next run may replace it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTPUT_MARKER).write_text(json.dumps({"stage": stage}) + "\n", encoding="utf-8")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(target: Path) -> list[Path]:
    """Remove ``target``'s staging siblings left by processes that no longer run."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:partial|old)-(\d+)$")
    removed = []
    if not target.parent.is_dir():
        return removed
    for sibling in target.parent.iterdir():
        match = pattern.match(sibling.name)
        pid = int(match.group(1)) if match else None
        if pid is not None and pid != os.getpid() and not _alive(pid):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


def staging_dir(target: Path, owner: int | None = None) -> Path:
    """Where to build ``target`` (not yet created); stale ones of dead runs removed first.
    ``owner`` is the process whose death makes it stale (default: this one)."""
    remove_stale(target)
    staging = staging_path(target, owner)
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def staging_path(target: Path, owner: int | None = None) -> Path:
    """The name of ``target``'s staging sibling for ``owner`` (default: this process)."""
    return target.parent / f".{target.name}.partial-{owner or os.getpid()}"


def swap_into_place(staging: Path, target: Path) -> None:
    """Put the finished ``staging`` folder at ``target``; the old one goes only once it has."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield an empty folder to build ``target`` in; it replaces ``target`` when the block ends
    without an error and is removed when it raises (the old ``target`` is then untouched)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target)
    staging.mkdir(parents=True)
    try:
        yield staging
        swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a path to write ``target``'s new content to; it replaces ``target`` in one rename
    when the block ends without an error, and is removed when it raises."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        yield partial
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
