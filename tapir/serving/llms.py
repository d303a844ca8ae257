"""What every tapir LLM adds to distilabel's: a response cache and usage accounting.

Every role's LLM records each batch it generates (calls, tokens, empty generations) to a
JSONL file per process, because distilabel runs steps in worker processes and a cached step
makes no call at all: counting real calls is how we prove an unchanged re-run makes zero.
Answers are also kept in a content-addressed cache (model settings + prompt), so when a recipe
changes only the prompts that changed reach a model. An engine client stores each answer the
moment it arrives (a killed run re-asks only what was in flight); a call that failed is never
stored, and a batch that raises becomes failed rows that say why; an answer that did not parse
is marked, so ``tapir data --reask-unparsed`` can ask it again.
The classes must be importable by name (distilabel reloads steps from its cache YAML), which
is why each is a small named subclass rather than one built at run time: the engine client
(``tapir.serving.engine_client``) and in-process transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from distilabel.models.llms import TransformersLLM
from pydantic import BaseModel, Field, PrivateAttr

from tapir.manifest import error_line

USAGE_FILE_PREFIX = "usage"
# What a usage record counts; HTTP requests (first tries and retries; one request may carry
# several generations), retries and failed calls come from engine clients.
USAGE_TOTALS: dict[str, Any] = {
    "calls": 0,
    "requests": 0,
    "input_tokens": 0,
    "output_tokens": 0,
    "empty_generations": 0,
    "seconds": 0.0,
    "retries": 0,
    "timeout_retries": 0,  # of the retries, those after a request timed out
    "failed_calls": 0,
    "rejected_prompts": 0,
    "batches": 0,  # Batch API jobs created (batch: true)
    "batches_resumed": 0,  # ... and those a killed run had created, polled again instead
    "batches_abandoned": 0,  # ... whose output was gone, status unknown, or never ended in time
    "batch_duplicate_ids": 0,  # output lines that repeated a request's id (the first kept)
    "batch_unknown_ids": 0,  # output lines naming no request of the batch (ignored)
    "batch_missing_ids": 0,  # requests the batch's output and error files did not answer
    "ledger_lines_skipped": 0,  # unreadable lines of the batch ledger (named in the log)
}


# The key of the response-cache entry an output came from, and the marks of unparsed answers.
CACHE_KEY = "cache_key"
# An answer's token log-probabilities (engine clients asked with top_logprobs), one per generation.
TOP_LOGPROBS = "top_logprobs"
UNPARSED_PREFIX = "unparsed:"

# How a request travels, not what it asks: a changed retry policy or time-out is the same answer.
TRANSPORT_SETTINGS = ("max_retries", "timeout")


class UsageLoggingMixin(BaseModel):
    """Appends one JSON line per generated batch to ``<usage_dir>/usage.<role>.<pid>.jsonl``."""

    role: str = Field("unknown", description="teacher, student or judge: whose calls these are.")
    model_id: str = Field("", description="What model this is, for the signature and the manifest.")
    # exclude=True keeps the path out of distilabel's step signature and cache YAML, so a run
    # in another folder still hits the cache; distilabel copies it back onto cached steps.
    usage_dir: str | None = Field(None, exclude=True)
    response_cache_dir: str | None = Field(None, exclude=True)
    step: str | None = Field(None, exclude=True, description="The step this LLM serves (progress).")
    reask_unparsed: bool = Field(
        False, exclude=True, description="Treat cached answers that failed to parse as not cached."
    )

    # Set around one batch: which cache key each input of it has, and which were already stored.
    _pending_keys: dict[str, str] = PrivateAttr(default_factory=dict)
    _stored_keys: set[str] = PrivateAttr(default_factory=set)
    _batch_failures: int = PrivateAttr(0)
    _batch_failure_reason: str = PrivateAttr("")

    def generate_outputs(self, inputs: list[Any], num_generations: int = 1, **kwargs: Any):  # type: ignore[override]
        cache = open_cache(self.response_cache_dir)
        keys = [self._cache_key(i, num_generations, kwargs) for i in inputs]
        outputs: list[Any] = [cache.get(k) if cache is not None else None for k in keys]
        if self.reask_unparsed and cache is not None:
            for n, key in enumerate(keys):
                if outputs[n] is not None and cache.delete(UNPARSED_PREFIX + key):
                    outputs[n] = None  # a real answer that did not parse: asked again, by request
        missing = [n for n, out in enumerate(outputs) if out is None]
        fresh: list[Any] = []
        started = time.perf_counter()
        if missing:
            self._pending_keys = {_input_key(inputs[n]): keys[n] for n in missing}
            try:
                fresh = super().generate_outputs(  # type: ignore[misc]
                    inputs=[inputs[n] for n in missing], num_generations=num_generations, **kwargs
                )
            except Exception as error:
                # distilabel would log it and hand the step rows of None; instead each row of
                # the batch says why, the calls count as failed (never cached), and the run
                # ends incomplete so a re-run asks them again.
                reason = f"{type(error).__name__}: {error_line(error)}"
                fresh = [_failed_output(num_generations, reason) for _ in missing]
                self._batch_failures += len(missing)
                self._batch_failure_reason = type(error).__name__
            finally:
                stored, self._pending_keys = set(self._stored_keys), {}
                self._stored_keys.clear()
            for n, out in zip(missing, fresh):
                outputs[n] = out
                if cache is not None and _complete(out) and keys[n] not in stored:
                    cache.set(keys[n], out)
        # Cached batches are logged too (0 calls): progress counts rows, usage counts calls.
        self._log_usage(fresh, len(missing) * num_generations, time.perf_counter() - started, len(inputs))
        # Which cache entry each answer is: the step marks those that fail to parse.
        return [{**out, CACHE_KEY: key} for out, key in zip(outputs, keys)]

    def mark_unparsed(self, key: str) -> None:
        """Remember that the cached answer ``key`` did not parse (``--reask-unparsed`` asks it again)."""
        cache = open_cache(self.response_cache_dir)
        if cache is not None:
            cache.set(UNPARSED_PREFIX + key, True)

    def remember_answer(self, input: Any, output: dict[str, Any]) -> None:
        """Cache one answer the moment it arrives, not when its whole batch has: a run killed
        mid-batch then asks again only the requests that were still in flight."""
        key = self._pending_keys.get(_input_key(input))
        cache = open_cache(self.response_cache_dir)
        if key is not None and cache is not None and _complete(output):
            cache.set(key, output)
            self._stored_keys.add(key)

    def _cache_key(self, input: Any, num_generations: int, kwargs: dict[str, Any]) -> str:
        settings = {
            k: v
            for k, v in self.dump().items()
            if "key" not in k and "token" not in k and k not in TRANSPORT_SETTINGS
        }
        payload = json.dumps(
            [type(self).__name__, settings, input, num_generations, kwargs], sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def _log_usage(self, outputs: list[dict[str, Any]], calls: int, seconds: float, rows: int) -> None:
        if not self.usage_dir:
            return
        input_tokens = output_tokens = empty = 0
        for output in outputs:
            stats = output.get("statistics") or {}
            input_tokens += sum(t or 0 for t in _as_list(stats.get("input_tokens")))
            output_tokens += sum(t or 0 for t in _as_list(stats.get("output_tokens")))
            empty += sum(1 for g in output.get("generations") or [] if g is not None and not str(g).strip())
        record = {
            "role": self.role,
            "model_id": self.model_id,
            "calls": calls,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "empty_generations": empty,
            "seconds": round(seconds, 3),
            "step": self.step,
            "rows": rows,
            "time": round(time.time(), 3),
        }
        drain = getattr(self, "drain_call_stats", None)
        if drain is not None:  # engine clients count their retries and failed requests
            record.update(drain())
        if self._batch_failures:
            record["failed_calls"] = record.get("failed_calls", 0) + self._batch_failures
            reasons = record.setdefault("failure_reasons", {})
            name = f"batch failed: {self._batch_failure_reason}"
            reasons[name] = reasons.get(name, 0) + self._batch_failures
            self._batch_failures = 0
        path = Path(self.usage_dir) / f"{USAGE_FILE_PREFIX}.{self.role}.{os.getpid()}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


_CACHES: dict[str, Any] = {}


def open_cache(folder: str | None) -> Any:
    """One diskcache per folder and process (safe across distilabel's worker processes)."""
    if not folder:
        return None
    if folder not in _CACHES:
        import diskcache

        _CACHES[folder] = diskcache.Cache(folder)
    return _CACHES[folder]


def _complete(output: dict[str, Any]) -> bool:
    """Only answers that arrived are cached: a failed call must be retried next run. (An empty
    answer from an engine was empty on every attempt: the model's, not a flaky proxy's.)"""
    generations = output.get("generations") or []
    return bool(generations) and all(g is not None for g in generations)


def _failed_output(num_generations: int, reason: str) -> dict[str, Any]:
    """What a call that failed for good yields: no generations, and why (per generation)."""
    return {
        "generations": [None] * num_generations,
        "statistics": {"input_tokens": [0] * num_generations, "output_tokens": [0] * num_generations},
        "failures": [reason] * num_generations,
    }


def _input_key(input: Any) -> str:
    return json.dumps(input, sort_keys=True, default=str)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def read_usage(usage_dir: str | Path) -> dict[str, dict[str, float]]:
    """Sum the usage records of a run per role."""
    totals: dict[str, dict[str, float]] = {}
    for path in sorted(Path(usage_dir).glob(f"{USAGE_FILE_PREFIX}.*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            role = totals.setdefault(record["role"], dict(USAGE_TOTALS))
            for key in USAGE_TOTALS:
                role[key] += record.get(key, 0)
            if record.get("batch_ids"):
                role.setdefault("batch_ids", []).extend(record["batch_ids"])
            for reason, count in (record.get("failure_reasons") or {}).items():
                reasons = role.setdefault("failure_reasons", {})
                reasons[reason] = reasons.get(reason, 0) + count
    return totals


def failed_call_count(usage: dict[str, dict[str, float]]) -> int:
    """Calls that failed for good, over every role of ``read_usage``'s totals."""
    return int(sum(numbers.get("failed_calls", 0) for numbers in usage.values()))


def strip_generation_markers(template: str) -> str:
    """Remove transformers' ``{% generation %}`` tags, which other Jinja environments reject."""
    for tag in (
        "{% generation %}",
        "{%- generation %}",
        "{% generation -%}",
        "{% endgeneration %}",
        "{%- endgeneration %}",
        "{% endgeneration -%}",
    ):
        template = template.replace(tag, "")
    return template


class TapirTransformersLLM(UsageLoggingMixin, TransformersLLM):
    """In-process transformers."""
