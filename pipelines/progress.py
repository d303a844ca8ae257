"""What a person watching ``tapir data`` sees: one live line per step, and no log flood.

Every step's LLM appends one usage record per batch (``tapir.serving.llms``), cached batches included,
from whichever worker process runs it. The main process reads those files as they grow and
draws one line per step — rows done of the planned total, calls, output tokens per second,
ETA, and spend where the recipe prices the model. distilabel's own INFO lines (hundreds per
run) go to the run's log file; its warnings and errors still reach the terminal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from tapir.pricing import usd
from tapir.redaction import ScrubbingFormatter
from tapir.serving.llms import USAGE_FILE_PREFIX


@dataclass
class StepLine:
    role: str = ""
    rows: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    retries: int = 0
    failed_calls: int = 0
    first: float = 0.0
    last: float = 0.0


class UsageTail:
    """Reads the usage records of a run as they are appended (each file from where it stopped)."""

    def __init__(self, usage_dir: Path) -> None:
        self.usage_dir = Path(usage_dir)
        self._offsets: dict[Path, int] = {}
        self.steps: dict[str, StepLine] = {}

    def poll(self) -> dict[str, StepLine]:
        for path in sorted(self.usage_dir.glob(f"{USAGE_FILE_PREFIX}.*.jsonl")):
            with path.open("rb") as handle:
                handle.seek(self._offsets.get(path, 0))
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line being written waits for next time
            self._offsets[path] = self._offsets.get(path, 0) + len(complete)
            for line in complete.decode("utf-8", errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    self._add(json.loads(line))
        return self.steps

    def _add(self, record: dict[str, Any]) -> None:
        name = record.get("step") or record.get("role") or "?"
        line = self.steps.setdefault(name, StepLine(role=record.get("role", "")))
        line.rows += int(record.get("rows") or 0)
        for key in ("calls", "input_tokens", "output_tokens", "retries", "failed_calls"):
            setattr(line, key, getattr(line, key) + int(record.get(key) or 0))
        stamp = float(record.get("time") or time.time())
        end_of_batch, start_of_batch = stamp, stamp - float(record.get("seconds") or 0)
        line.first = min(line.first or start_of_batch, start_of_batch)
        line.last = max(line.last, end_of_batch)


def render(
    steps: dict[str, StepLine],
    totals: dict[str, int],
    prices: dict[str, dict[str, float]],
    now: float,
    final: bool = False,
) -> Table:
    """The step lines; ``final``: the run is over (planned totals were upper bounds)."""
    table = Table(title="tapir data: steps", title_justify="left", expand=False)
    for column in ("step", "rows", "calls", "out tok/s", "ETA", "retries/failed", "spend"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for name in sorted(steps, key=lambda n: steps[n].first):
        line = steps[name]
        total = totals.get(name)
        finished = final or bool(total and line.rows >= total)
        seconds = max(1e-6, (line.last if finished else now) - line.first)
        rate = line.output_tokens / seconds if line.calls else 0.0
        rows_per_s = line.rows / seconds
        eta = ""
        if finished:
            eta = "done"
        elif total and rows_per_s > 0:
            eta = f"{(total - line.rows) / rows_per_s:.0f}s"
        price = prices.get(line.role)
        spend = ""
        if price:
            spend = f"${usd(price, line.input_tokens, line.output_tokens):.4f}"
        table.add_row(
            name,
            f"{line.rows}/{total}" if total else str(line.rows),
            str(line.calls),
            f"{rate:.1f}",
            eta,
            f"{line.retries}/{line.failed_calls}",
            spend,
        )
    return table


class LiveProgress:
    """Redraws the step lines every ``refresh_s`` while the pipeline runs (terminals only)."""

    def __init__(
        self,
        usage_dir: Path,
        console: Console,
        totals: dict[str, int],
        prices: dict[str, dict[str, float]],
        refresh_s: float = 1.0,
    ) -> None:
        self.tail = UsageTail(usage_dir)
        self.console = console
        self.totals = totals
        self.prices = prices
        self.refresh_s = refresh_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def table(self, final: bool = False) -> Table:
        return render(self.tail.poll(), self.totals, self.prices, time.time(), final)

    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal and not self.console.quiet:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        with Live(self.table(), console=self.console, refresh_per_second=4, transient=True) as live:
            while not self._stop.wait(self.refresh_s):
                live.update(self.table())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextlib.contextmanager
def distilabel_logs_to(log_file: Path) -> Iterator[None]:
    """distilabel's INFO lines to ``log_file``; only its warnings and errors to the terminal.

    distilabel always adds a terminal handler for every level to its log listener and has no
    switch for it, so this wraps its ``setup_logging`` to add our file and raise the terminal
    handler's level once the listener exists.
    """
    import distilabel.pipeline.base as pipeline_base
    import distilabel.utils.logging as distilabel_logging
    from rich.logging import RichHandler

    original = pipeline_base.setup_logging
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(ScrubbingFormatter("[%(asctime)s] %(levelname)-8s %(name)s %(message)s"))

    def setup_logging(log_queue=None, filename=None, logging_handlers=None) -> None:
        original(log_queue=log_queue, filename=filename, logging_handlers=[file_handler])
        listener = distilabel_logging.queue_listener
        for handler in listener.handlers if listener is not None else ():
            if isinstance(handler, RichHandler):
                handler.setLevel(logging.WARNING)

    pipeline_base.setup_logging = setup_logging
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        pipeline_base.setup_logging = original
        # distilabel left a handler feeding its (now closed) log queue on the root logger: what
        # runs next in this process (`tapir distill`'s training) would get "Logging error"s.
        root.handlers[:] = handlers
        root.setLevel(level)
        file_handler.close()
