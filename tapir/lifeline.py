"""Tapir's children die with it, however it ends (SIGKILL of the main process included).

distilabel runs each step in a worker of a multiprocessing pool beside a manager process; none
of them notices when the main process is killed, so they lived on as orphans holding memory,
engine slots and open connections. Linux's parent-death signal lets the kernel end each child
the moment its parent goes: engines get it before ``exec`` (``tapir.serving.engines``), and every
process forked from tapir gets it through an at-fork hook registered once by the CLI.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1
_registered = False


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent ends; if the parent
    (``parent``'s pid, when given) already ended before the request took effect, exit now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def children_die_with_this_process() -> None:
    """From now on, every process forked from this one ends when its parent does."""
    global _registered
    if not _registered:
        os.register_at_fork(after_in_child=die_with_parent)
        _registered = True
