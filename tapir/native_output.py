"""Native libraries' console chatter (llama.cpp's model loader and quantizer, liblinear's
warnings) goes to a log file, not the user's console.

C code writes to file descriptors 1 and 2 directly (and through C stdio buffers), past Python's
``sys.stdout``: the only way to keep it off the console is to point those descriptors at a file
for the length of the call, flushing the C buffers on both sides.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def _flush_c_stdio() -> None:
    with contextlib.suppress(OSError, AttributeError):  # no libc to reach: nothing buffered there
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def native_output_to(log: Path | None) -> Iterator[None]:
    """Descriptors 1 and 2 append to ``log`` (None: discarded) inside the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    _flush_c_stdio()
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    sink = os.open(log if log is not None else os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(sink, 1)
        os.dup2(sink, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _flush_c_stdio()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, sink):
            os.close(fd)
