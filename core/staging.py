"""Write a folder beside its target, then swap it into place: a reader never sees half of it.

A killed run leaves its hidden ``.<name>.partial-<pid>`` (or ``.old-<pid>``) sibling behind;
the next run for the same target removes those whose process is gone, so they do not pile up.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


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
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


def staging_dir(target: Path) -> Path:
    """Where to build ``target`` (not yet created); stale ones of dead runs removed first."""
    remove_stale(target)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    return staging


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
