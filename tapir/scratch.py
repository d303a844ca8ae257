"""Each tapir command keeps its temporary files in a folder of its own, which goes with it.

distilabel's multiprocessing leaves ``pymp-*`` folders and tapir's engines their slot files in
the system's temporary folder; a ``kill -9`` left them behind for good. Every command now points
``TMPDIR`` (and Python's ``tempfile``) at ``<tmp>/tapir-run-<pid>``, which its children inherit;
it is removed when the command ends, and one left by a killed command is removed by the next
(its pid is gone), as the staging folders beside outputs are (``tapir.staging``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

PREFIX = "tapir-run-"
# multiprocessing puts its sockets at <tmp>/pymp-xxxxxxxx/listener-xxxxxxxx, and a Unix socket's
# path holds at most 107 bytes: a longer private folder would break distilabel's workers.
_MAX_BASE = 107 - len("/pymp-xxxxxxxx/listener-xxxxxxxx") - 8
# What a killed command (or an older tapir) left in the system's temporary folder, by its pid.
_LEFT_BEHIND = re.compile(rf"^(?:{PREFIX}|tapir-engines-)(\d+)(?:-[0-9a-f]+)?$")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (someone else's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_left_behind(base: Path) -> list[Path]:
    """Remove the temporary folders of tapir commands that no longer run."""
    removed = []
    with suppress(OSError):
        for entry in base.iterdir():
            match = _LEFT_BEHIND.match(entry.name)
            if match and int(match.group(1)) != os.getpid() and not process_alive(int(match.group(1))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


@contextmanager
def private_tmp() -> Iterator[Path]:
    """This command's temporary folder, for it and its children, for as long as the block runs."""
    base = Path(tempfile.gettempdir())
    remove_left_behind(base)
    mine = base / f"{PREFIX}{os.getpid()}"
    if len(str(mine)) > _MAX_BASE:  # multiprocessing's sockets in it would not bind: as it was
        yield base
        return
    shutil.rmtree(mine, ignore_errors=True)  # a dead command that had this pid
    try:
        mine.mkdir(mode=0o700)
    except OSError:  # no writable temporary folder: leave the defaults alone
        yield base
        return
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(mine)
    tempfile.tempdir = str(mine)
    try:
        yield mine
    finally:
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        tempfile.tempdir = saved_tempdir
        shutil.rmtree(mine, ignore_errors=True)
