"""Training logs: every logging step goes to a JSONL file that survives the run.

The Trainer already prints each log (loss, lr, tokens seen, tokens/s) under its tqdm bar;
this callback keeps the same records, with the round's name and the tokens/s of each interval,
in ``<round>/train_log.jsonl`` for the report and for comparing rounds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import TrainerCallback


class TrainingLog(TrainerCallback):
    def __init__(self, path: Path, round_name: str, console: Console | None = None) -> None:
        self.path = path
        self.round_name = round_name
        self.console = console
        self._last_time: float | None = None
        self._last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._last_time = time.perf_counter()
        self._last_tokens = int(state.num_input_tokens_seen or 0)
        if state.global_step and state.is_world_process_zero:
            self._forget_steps_after(state.global_step)
            if self.console is not None:
                self.console.print(f"[yellow]{self.round_name}[/]: resumed at step {state.global_step}")

    def _forget_steps_after(self, step: int) -> None:
        """A run killed after its last checkpoint logged steps it trains again on resume: those
        records go, so the log holds each step once."""
        if not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and _step_of(line) <= step
        ]
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        partial.replace(self.path)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        tokens = int(state.num_input_tokens_seen or 0)
        elapsed = now - (self._last_time or now)
        record: dict[str, Any] = {"round": self.round_name, "step": state.global_step, **logs}
        if "loss" in logs and elapsed > 0:
            record["tokens_per_second"] = round((tokens - self._last_tokens) / elapsed, 1)
            self._last_time, self._last_tokens = now, tokens
        record["num_input_tokens_seen"] = tokens
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return float("inf")  # a line cut short by the kill: dropped


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class NoFinalCheckpoint(TrainerCallback):
    """The Trainer writes a full checkpoint (weights + optimizer state, 3x the model) when the
    last step ends; the round saves its final model right after, so that checkpoint only costs
    time and disk. Mid-round checkpoints, the ones resuming needs, are unaffected."""

    def on_step_end(self, args, state, control, **kwargs: Any) -> None:
        if state.global_step >= state.max_steps:
            control.should_save = False
