"""Nothing tapir prints carries a credential: stdout, stderr and log files pass through ``scrub``.

Keys reach text in ways no single call site controls (a server that echoes the caller's key
in its error body, a library's exception message, a traceback in distilabel's log), so the
CLI wraps its output streams once and the distilabel log file gets a scrubbing formatter.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from tapir.manifest import scrub


class ScrubbedStream:
    """A text stream that scrubs what is written to it; everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ScrubbingFormatter(logging.Formatter):
    """A log formatter whose lines (tracebacks included) are scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def scrub_standard_streams() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once) so nothing printed carries a credential."""
    if not isinstance(sys.stdout, ScrubbedStream):
        sys.stdout = ScrubbedStream(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, ScrubbedStream):
        sys.stderr = ScrubbedStream(sys.stderr)  # type: ignore[assignment]
