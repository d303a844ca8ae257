"""One run per output: an exclusive ``flock`` held for the whole command.

Two ``tapir data`` runs of one recipe (two terminals, or a re-run while the first still runs)
used to share the output folder and distilabel's cache: one died in distilabel's queue thread,
the other doubled its expansions and marked the cache complete. Now each output folder and each
pipeline cache is locked by the run that writes it; a second run refuses with one line naming
the first one's pid. The kernel drops a ``flock`` when its holder dies, so a ``kill -9`` never
leaves a stale lock behind, and the lock file itself is removed by whoever releases it.

A child of the holder (``tapir train``'s re-score, a ``tapir data`` process started by ``tapir
distill``) works for it and may use what it holds: a busy lock whose holder is one of this
process's ancestors is not a refusal.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
from pathlib import Path

from tapir.errors import DataError

# lock file -> open descriptor holding the flock, for the life of this process (or release_all)
_HELD: dict[str, int] = {}
_CREATED: set[Path] = set()
_HOLDER_PID = os.getpid()  # a forked child inherits _HELD but must never release its parent's locks


def lock_file_for(folder: Path) -> Path:
    """A folder's lock file: a hidden sibling, so it survives the folder being swapped whole."""
    return folder.parent / f".{folder.name}.lock"


def hold(lock: Path, field: str, what: str) -> None:
    """Hold ``lock`` exclusively until this command ends; refuse, naming ``field`` and the
    holder's pid, when another run holds it. Re-entrant within one process."""
    global _HOLDER_PID
    if os.getpid() != _HOLDER_PID:  # a forked child: what it inherited is its parent's
        _HELD.clear()
        _HOLDER_PID = os.getpid()
    key = os.path.abspath(lock)
    if key in _HELD:
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{field}: cannot create {lock.parent} ({exc.strerror})") from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DataError(f"{field}: cannot create a lock file in {lock.parent} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if holder is not None and holder in _ancestors():
                return  # the run that started this process holds it for both
            who = f"pid {holder}" if holder is not None else "a process that is starting"
            raise DataError(
                f"{field}: {what} is in use by another tapir run ({who}); wait for it to end, "
                "or choose another folder"
            ) from None
        # The file may have been released and removed between open and flock: lock the one
        # that is there now, or two runs could each hold a different inode.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[key] = fd
        return


def release_all() -> None:
    """Remove and release every lock this process holds (the end of a command), and the folders
    created only to hold them that nothing else was written into."""
    if os.getpid() != _HOLDER_PID:
        return
    for path, fd in list(_HELD.items()):
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still held: a waiter that opened it then sees another inode
        with contextlib.suppress(OSError):
            os.close(fd)
        _HELD.pop(path, None)
    for folder in sorted(_CREATED, key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: a run that wrote its output keeps it
    _CREATED.clear()


def created_for_a_lock(folders: list[Path]) -> None:
    """Folders made so a lock file could sit there: removed at release if still empty, so a
    refused run leaves no stub behind."""
    _CREATED.update(folders)


def held() -> list[str]:
    return list(_HELD)


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _ancestors() -> set[int]:
    """The pids of this process's parent, its parent, and so on."""
    found: set[int] = set()
    pid = os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


atexit.register(release_all)
