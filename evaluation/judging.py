"""The evaluation judge: the recipe's judge model (any backend tapir builds), called in batches.

Every verdict is parsed by the benchmark's own parser. A verdict that does not parse is asked
once more with some sampling (a greedy judge would only repeat itself); what still fails is
counted and reported with the result -- never turned into a score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tapir.errors import EvaluationError
from tapir.llm_factory import Constraint, LLMContext, build_llm, preflight
from tapir.llms import read_usage
from tapir.recipe import ModelSpec

T = TypeVar("T")
RETRY_TEMPERATURE = 0.7


@dataclass
class Verdict(Generic[T]):
    text: str
    value: T | None
    attempts: int = 1


@dataclass
class JudgeStats:
    judgments: int = 0
    parse_failures: int = 0
    retries: int = 0
    recovered_by_retry: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class JudgeClient:
    """One judge model for a whole evaluation run."""

    def __init__(
        self,
        spec: ModelSpec,
        context: LLMContext,
        *,
        max_new_tokens: int,
        temperature: float,
        constraint: Constraint | None,
        batch_size: int,
        retries: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        preflight(spec, "judge")
        self.llm = build_llm(
            spec,
            "judge",
            context,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            constraint=constraint,
        )
        self.llm.load()
        self.batch_size = batch_size
        self.retries = retries
        self.on_batch = on_batch
        self.model_id = getattr(self.llm, "model_id", spec.model)

    def _call(self, conversations: list[list[dict[str, str]]], retry: bool) -> list[str]:
        kwargs = dict(self.llm.generation_kwargs or {})
        if retry:
            kwargs["temperature"] = max(RETRY_TEMPERATURE, kwargs.get("temperature", 0.0))
            if "do_sample" in kwargs:
                kwargs["do_sample"] = True
        texts: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = conversations[start : start + self.batch_size]
            try:
                outputs = self.llm.generate_outputs(inputs=batch, num_generations=1, **kwargs)
            except Exception as exc:  # an endpoint that went away mid-run: one line, no traceback
                raise EvaluationError(
                    f"judge: the judge model failed ({type(exc).__name__}: {exc})"
                ) from None
            texts += [((o.get("generations") or [None])[0] or "") for o in outputs]
            if self.on_batch:
                self.on_batch(len(batch))
        return texts

    def judge(
        self, conversations: list[list[dict[str, str]]], parse: Callable[[str], T | None], stats: JudgeStats
    ) -> list[Verdict[T]]:
        verdicts = [Verdict(text, parse(text)) for text in self._call(conversations, retry=False)]
        for _ in range(self.retries):
            failed = [n for n, v in enumerate(verdicts) if v.value is None]
            if not failed:
                break
            stats.retries += len(failed)
            for n, text in zip(failed, self._call([conversations[n] for n in failed], retry=True)):
                value = parse(text)
                verdicts[n] = Verdict(text, value, verdicts[n].attempts + 1)
                stats.recovered_by_retry += value is not None
        stats.judgments += len(verdicts)
        stats.parse_failures += sum(v.value is None for v in verdicts)
        return verdicts


def usage_summary(usage_dir: Path, price: dict[str, float] | None) -> dict[str, Any]:
    """Judge tokens and time this run spent (cached verdicts cost nothing), and cost if priced."""
    judge = read_usage(usage_dir).get("judge", {})
    summary: dict[str, Any] = {
        "calls": int(judge.get("calls", 0)),
        "input_tokens": int(judge.get("input_tokens", 0)),
        "output_tokens": int(judge.get("output_tokens", 0)),
        "seconds": round(float(judge.get("seconds", 0.0)), 1),
    }
    if price:
        summary["cost_usd"] = round(
            summary["input_tokens"] / 1e6 * price.get("input", 0.0)
            + summary["output_tokens"] / 1e6 * price.get("output", 0.0),
            4,
        )
    return summary
