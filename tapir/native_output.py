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


#: transformers' bars for work on local files that takes seconds: noise between tapir's own
#: lines. Downloads keep theirs (a multi-GB model needs a bar).
LOCAL_BARS = (
    "Loading weights",
    "Writing model shards",
    "Converting and de-quantizing GGUF",
    "Loading checkpoint shards",
)


def quiet_transformers_local_bars() -> None:
    """Hide transformers' progress bars for local loads and saves (idempotent)."""
    from transformers.utils import logging as transformers_logging

    def hook(factory, args, kwargs):  # type: ignore[no-untyped-def]
        description = str(kwargs.get("desc") or (args[1] if len(args) > 1 else ""))
        if description.startswith(LOCAL_BARS):
            kwargs = {**kwargs, "disable": True}
        return factory(*args, **kwargs)

    transformers_logging.set_tqdm_hook(hook)


@contextlib.contextmanager
def gguf_conversion_bar_off() -> Iterator[None]:
    """transformers' GGUF reader draws its bar with tqdm directly, past ``set_tqdm_hook``: for the
    seconds a local GGUF takes to convert, its module's ``tqdm`` is a disabled one."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original
