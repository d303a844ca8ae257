"""The evaluation judge: the recipe's judge model (any backend tapir builds), called in batches.

Every verdict is parsed by the benchmark's own parser. A verdict that does not parse is asked
once more with some sampling (a greedy judge would only repeat itself); what still fails is
counted and reported with the result -- never turned into a score. A judge read as expected
scores (``expected``) grades with sum p(k)*k over the rating tokens' log-probabilities, and the
number it wrote is kept beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tapir.expected_score import expected_score
from tapir.recipe import ModelSpec
from tapir.serving.backends import backend_of
from tapir.serving.llm_factory import Constraint, LLMContext, build_llm, preflight
from tapir.serving.llms import TOP_LOGPROBS, read_usage

T = TypeVar("T")
RETRY_TEMPERATURE = 0.7


@dataclass
class Verdict(Generic[T]):
    text: str
    value: T | None
    attempts: int = 1
    written: T | None = None  # the number written, when ``value`` is the expected score


@dataclass
class JudgeStats:
    judgments: int = 0
    parse_failures: int = 0
    retries: int = 0
    recovered_by_retry: int = 0
    call_errors: int = 0  # prompts the judge could not answer at all (e.g. longer than its context)
    last_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def health(self) -> dict[str, Any]:
        """What every benchmark reports about its judge."""
        report = {
            "judgments": self.judgments,
            "parse_failures": self.parse_failures,
            "retries": self.retries,
            "recovered_by_retry": self.recovered_by_retry,
            "call_errors": self.call_errors,
            **self.extra,
        }
        if self.last_error:
            report["last_call_error"] = self.last_error
        return report


class JudgeClient:
    """The judge for one benchmark: its verdict budget, batching and retries over a loaded LLM."""

    def __init__(
        self,
        llm: Any,
        *,
        max_new_tokens: int,
        batch_size: int,
        retries: int = 1,
        on_batch: Callable[[int], None] | None = None,
        expected: bool = False,
    ) -> None:
        self.llm = llm
        self.expected = expected
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.retries = retries
        self.on_batch = on_batch
        self.model_id = getattr(llm, "model_id", "") or llm.model_name

    def _call(
        self, conversations: list[list[dict[str, str]]], retry: bool, stats: JudgeStats
    ) -> list[tuple[str, Any]]:
        """Each conversation's verdict text and its token log-probabilities (None without)."""
        kwargs = {**(self.llm.generation_kwargs or {}), "max_new_tokens": self.max_new_tokens}
        if retry:
            kwargs["temperature"] = max(RETRY_TEMPERATURE, kwargs.get("temperature", 0.0))
            if "do_sample" in kwargs:
                kwargs["do_sample"] = True
        texts: list[tuple[str, Any]] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = conversations[start : start + self.batch_size]
            try:
                outputs = self.llm.generate_outputs(inputs=batch, num_generations=1, **kwargs)
            except Exception:  # an in-process judge raises for the whole batch
                outputs = [self._one(conversation, kwargs, stats) for conversation in batch]
            for output in outputs:  # an engine client reports each failed request instead
                failure = next((f for f in (output or {}).get("failures") or [] if f), None)
                if failure:
                    stats.call_errors += 1
                    stats.last_error = failure[:300]
            texts += [(_first_text(o), _first_logprobs(o)) for o in outputs]
            if self.on_batch:
                self.on_batch(len(batch))
        return texts

    def _one(self, conversation: list[dict[str, str]], kwargs: dict[str, Any], stats: JudgeStats) -> Any:
        """A single prompt after its batch failed: an error here is that prompt's, counted."""
        try:
            return self.llm.generate_outputs(inputs=[conversation], num_generations=1, **kwargs)[0]
        except Exception as exc:
            stats.call_errors += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return None

    def judge(
        self, conversations: list[list[dict[str, str]]], parse: Callable[[str], T | None], stats: JudgeStats
    ) -> list[Verdict[T]]:
        verdicts = [
            self._verdict(text, tokens, parse, 1) for text, tokens in self._call(conversations, False, stats)
        ]
        for _ in range(self.retries):
            failed = [n for n, v in enumerate(verdicts) if v.value is None]
            if not failed:
                break
            stats.retries += len(failed)
            answers = self._call([conversations[n] for n in failed], True, stats)
            for n, (text, tokens) in zip(failed, answers):
                verdicts[n] = self._verdict(text, tokens, parse, verdicts[n].attempts + 1)
                stats.recovered_by_retry += verdicts[n].value is not None
        stats.judgments += len(verdicts)
        stats.parse_failures += sum(v.value is None for v in verdicts)
        if self.expected:  # written but not readable as an expectation: counted apart
            unreadable = sum(v.value is None and v.written is not None for v in verdicts)
            stats.extra["no_expected_score"] = stats.extra.get("no_expected_score", 0) + unreadable
        return verdicts

    def _verdict(self, text: str, tokens: Any, parse: Callable[[str], T | None], attempts: int) -> Verdict[T]:
        written = parse(text)
        if not self.expected or written is None:
            return Verdict(text, written, attempts, written)
        expected = expected_score(tokens)
        value = expected.value.value if expected.ok and expected.value is not None else None
        return Verdict(text, value, attempts, written)  # type: ignore[arg-type]


def build_judges(
    spec: ModelSpec,
    context: LLMContext,
    budgets: dict[str, tuple[int, Constraint | None]],
    *,
    constrain: bool,
    batch_size: int,
    retries: int,
    on_batch: Callable[[int], None] | None = None,
    expected: set[str] | None = None,
    top_logprobs: int = 20,
) -> dict[str, JudgeClient]:
    """One JudgeClient per benchmark (name -> (verdict budget, answer constraint)).

    A served judge (llama.cpp, vLLM, an endpoint) is one engine for every benchmark; each
    benchmark's client sends its own constraint with each request (a grammar for llama.cpp,
    guided choice or regex for vLLM) when ``constrain`` is on. An in-process transformers
    judge is loaded once and shared, and the verdict formats are left to the parsers.
    """
    preflight(spec, "judge")
    shared = None
    judges = {}
    expected = expected or set()
    for name, (budget, constraint) in budgets.items():
        if backend_of(spec.backend).served:
            llm = build_llm(
                spec,
                "judge",
                context,
                temperature=0.0,
                constraint=constraint if constrain else None,
                step=f"eval_judge:{name}",
                top_logprobs=top_logprobs if name in expected else None,
            )
            llm.load()
        else:
            if shared is None:
                shared = build_llm(spec, "judge", context, temperature=0.0)
                shared.load()
            llm = shared
        judges[name] = JudgeClient(
            llm,
            max_new_tokens=budget,
            batch_size=batch_size,
            retries=retries,
            on_batch=on_batch,
            expected=name in expected,
        )
    return judges


def _first_logprobs(output: Any) -> Any:
    if not output:
        return None
    return (output.get(TOP_LOGPROBS) or [None])[0]


def _first_text(output: Any) -> str:
    if not output:
        return ""
    return (output.get("generations") or [None])[0] or ""


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
