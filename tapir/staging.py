"""tapir's one atomic writer: build a folder or file beside its target, then swap it into place,
so a reader never sees half of it (``atomic_folder``, ``atomic_file``).

A killed run leaves its hidden ``.<name>.partial-<pid>`` (or ``.old-<pid>``) sibling behind;
the next run for the same target removes those whose process is gone, so they do not pile up.

A stage only ever replaces (or writes into) a folder that is absent, empty or proven to be an
earlier run of the same stage: its ``.tapir-output`` marker names the stage and lists every
file tapir wrote there, so ``tapir data --output recipes`` never swaps the user's recipes away,
and a file the user keeps inside a tapir folder makes the next run refuse rather than delete it.
Each output is also locked for the run's lifetime (``tapir.run_lock``): one run per output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tapir.errors import DataError
from tapir.scratch import process_alive

OUTPUT_MARKER = ".tapir-output"
#: The marker's format: 2 lists the files tapir wrote (1, without a list, proves nothing).
MARKER_VERSION = 2
#: Beside each output: staging siblings (``.<name>.partial-<pid>``, ``.old-<pid>``) and locks.
_OURS = re.compile(r"^\.[^/]+\.(?:partial|old)-\d+$|^\.[^/]+\.lock$")


def output_owner(folder: Path) -> str | None:
    """Which tapir stage wrote ``folder`` (``data``, ``train``, ``eval``, ...), or None."""
    marker = _read_marker(folder)
    return str(marker["stage"]) if marker else None


def _read_marker(folder: Path) -> dict[str, Any] | None:
    path = folder / OUTPUT_MARKER
    if not path.is_file() or path.is_symlink():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("stage"), str):
        return None
    return marker


def files_under(folder: Path) -> dict[str, float]:
    """Every file (or link) under ``folder`` with its status-change time (set by the kernel when
    a file is created, written or moved, never copied from elsewhere), by relative path; the
    marker, staging siblings and lock files are tapir's by name and left out."""
    found: dict[str, float] = {}
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            continue
        relative = path.relative_to(folder)
        if relative.as_posix() == OUTPUT_MARKER or any(_OURS.match(part) for part in relative.parts):
            continue
        try:
            found[relative.as_posix()] = path.lstat().st_ctime
        except FileNotFoundError:
            continue
    return found


def foreign_files(folder: Path, marker: dict[str, Any]) -> list[str]:
    """Files in ``folder`` that its marker does not prove tapir wrote: neither listed when the
    last run closed it, nor changed while a run that never closed it (killed) was writing."""
    listed = set(marker.get("files") or [])
    since = marker.get("open_since")
    return sorted(
        name
        for name, changed in files_under(folder).items()
        if name not in listed and not (isinstance(since, (int, float)) and changed >= since)
    )


def claim_output(folder: Path, stage: str, field: str) -> None:
    """Lock ``folder`` for this run and refuse, with one line naming ``field``, to write
    ``stage``'s output where it could destroy what is not tapir's: a file, a folder another
    stage (or nobody) marked, or a marked folder holding files tapir did not write."""
    from tapir.run_lock import hold, lock_file_for

    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise DataError(f"{field}: {folder} is a file, not a folder tapir wrote; not replacing it")
    _check_creatable(folder, field)
    check_free_space(folder, field)
    hold(lock_file_for(folder), field, str(folder))
    if not folder.exists() or not any(folder.iterdir()):
        return
    marker = _read_marker(folder)
    if marker is None:
        raise DataError(
            f"{field}: {folder} exists and is not a tapir {stage} folder; not writing into it "
            "(choose another folder, or remove it yourself)"
        )
    if marker["stage"] != stage:
        raise DataError(
            f"{field}: {folder} holds a tapir {marker['stage']} run; a {stage} run would replace it"
        )
    if marker.get("version") != MARKER_VERSION:
        raise DataError(
            f"{field}: {folder} was written by an older tapir that did not list its files, so "
            "tapir cannot tell them from yours; move what you keep there, remove it, and run again"
        )
    foreign = foreign_files(folder, marker)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DataError(
            f"{field}: {folder} holds files tapir did not write ({shown}); a {stage} run could "
            "replace them: move them out of it and run again"
        )


def _check_creatable(folder: Path, field: str) -> None:
    """One line, not a traceback, for a folder that can never be written (under /proc, a
    read-only mount, a path through a file)."""
    from tapir.run_lock import created_for_a_lock

    parent = folder.parent
    missing = []
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{field}: cannot create {folder} ({exc.strerror or exc})") from None
    created_for_a_lock(missing)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{field}: cannot write into {parent} (permission denied)")
    probe = parent / f".tapir-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except FileExistsError:
        pass
    except OSError as exc:
        raise DataError(f"{field}: cannot write into {parent} ({exc.strerror or exc})") from None


#: Free space a run needs where it writes before it starts; below it the run is refused up front
#: instead of failing when its output (or the cache) is written, after the whole run.
MIN_FREE_BYTES = 64 * 1024 * 1024


def check_free_space(folder: Path, field: str, needed: int = MIN_FREE_BYTES) -> None:
    """One line before the run when the disk that will hold ``folder`` is (nearly) full."""
    existing = folder.expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        stats = os.statvfs(existing)
    except OSError:
        return  # not a file system that says (the write itself will tell)
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise DataError(
            f"{field}: the disk holding {folder} is full ({free / 2**20:.1f} MiB free; a run needs "
            f"at least {needed / 2**20:.0f} MiB): free some space and run again"
        )


def mark_output(folder: Path, stage: str) -> None:
    """Close ``folder`` as a finished tapir ``stage`` output: its marker lists every file in it
    now, each of which the next run may replace."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_marker(folder, {"stage": stage, "version": MARKER_VERSION, "files": sorted(files_under(folder))})


def open_output(folder: Path, stage: str) -> None:
    """Say that a ``stage`` run is writing into ``folder`` now: the files it already listed stay
    listed, and a file changed from now on is the run's even if the run is killed before
    :func:`mark_output` lists it. (So a file put into a folder after a run was killed there,
    before the next run, is taken as tapir's: nothing tells the two apart.)"""
    folder.mkdir(parents=True, exist_ok=True)
    marker = _read_marker(folder) or {}
    ours = marker.get("stage") == stage and marker.get("version") == MARKER_VERSION
    listed = list(marker.get("files") or []) if ours else []
    since = marker.get("open_since") if ours else None
    if not isinstance(since, (int, float)):  # already open (a caller's, or a killed run's): kept
        path = _write_marker(folder, {"stage": stage, "version": MARKER_VERSION, "files": listed})
        since = path.stat().st_ctime  # the file system's clock, which the files' times come from
    _write_marker(folder, {"stage": stage, "version": MARKER_VERSION, "files": listed, "open_since": since})


@contextmanager
def writing_into(folder: Path, stage: str) -> Iterator[None]:
    """A stage that writes into its folder in place (train, eval, review): open while it writes,
    closed with the list of what is there when it ends, however it ends."""
    open_output(folder, stage)
    try:
        yield
    finally:
        mark_output(folder, stage)


def _write_marker(folder: Path, marker: dict[str, Any]) -> Path:
    path = folder / OUTPUT_MARKER
    partial = folder / f".{OUTPUT_MARKER}.partial-{os.getpid()}"
    partial.write_text(json.dumps(marker) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def remove_stale(target: Path) -> list[Path]:
    """Remove ``target``'s staging siblings left by processes that no longer run."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:partial|old)-(\d+)$")
    removed = []
    if not target.parent.is_dir():
        return removed
    for sibling in target.parent.iterdir():
        match = pattern.match(sibling.name)
        pid = int(match.group(1)) if match else None
        if pid is not None and pid != os.getpid() and not process_alive(pid):
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
        if staging.exists():  # the caller may have put it elsewhere (``swap_into_place``)
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
