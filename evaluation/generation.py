"""Answer generation for evaluation: the model's own chat template, batched.

FastChat's ``gen_model_answer`` answers one prompt at a time; on a GPU that leaves most of the
device idle. We batch (left padding, prompts sorted by length so a batch pads little) with
transformers, or send the whole list, concurrently, to a served engine (llama.cpp, vLLM). The
chat template is always the one saved with the model's tokenizer -- a model without one is
refused, never given a template guessed from its name. Answers are cached by model identity,
prompt and sampling settings, so re-evaluating an unchanged checkpoint generates nothing.
Each answer keeps its length in tokens and whether it ended before the cap
(:class:`~tapir.evaluation.answer_stats.GeneratedText`); no stop string cuts an answer short.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tapir.errors import EvaluationError
from tapir.evaluation.answer_stats import GeneratedText
from tapir.native_output import quiet_transformers_local_bars
from tapir.recipe import ModelSpec
from tapir.serving.llm_factory import LLMContext
from tapir.serving.llms import open_cache

Conversation = list[dict[str, str]]


class Generator(Protocol):
    def generate(
        self, conversations: list[Conversation], max_new_tokens: int, temperature: float, seed: int
    ) -> list[str]: ...


class TransformersGenerator:
    """Batched ``model.generate`` on left-padded prompts rendered with the tokenizer's template."""

    def __init__(
        self,
        model: str,
        batch_size: int = 8,
        dtype: str = "auto",
        options: dict[str, Any] | None = None,
        on_batch: Callable[[int], None] | None = None,
        chat_template: str | None = None,
    ) -> None:
        """``chat_template`` replaces the tokenizer's (the untrained student's recipe template)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        except OSError as exc:
            raise EvaluationError(
                f"evaluation.models: cannot load a tokenizer from {model} ({exc})"
            ) from None
        if chat_template:
            self.tokenizer.chat_template = chat_template
        if not self.tokenizer.chat_template:
            raise EvaluationError(
                f"evaluation.models: {model} has no chat template saved with its tokenizer "
                "(tapir never guesses one from the model name; save one with the tokenizer)"
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # transformers takes the dtype by name, as training passes it (training/sft.py)
        quiet_transformers_local_bars()
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, **(options or {}))
        self.model.eval()
        self.batch_size = batch_size
        self.on_batch = on_batch

    def render(self, conversation: Conversation) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    def _eos_ids(self) -> set[int]:
        """Every token that ends an answer: the generation config's and the tokenizer's EOS."""
        configured = self.model.generation_config.eos_token_id
        ids = set(
            configured if isinstance(configured, list) else [configured] if configured is not None else []
        )
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def generate(
        self, conversations: list[Conversation], max_new_tokens: int, temperature: float, seed: int
    ) -> list[str]:
        import torch

        prompts = [self.render(c) for c in conversations]
        order = sorted(range(len(prompts)), key=lambda n: len(prompts[n]))
        answers: list[str] = [""] * len(prompts)
        eos = self._eos_ids()
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [prompts[n] for n in chunk]}, return_tensors="pt")
            sampling: dict[str, Any] = {"do_sample": temperature > 0}
            if temperature > 0:
                sampling["temperature"] = temperature
                torch.manual_seed(seed + start)
            with torch.inference_mode():
                output = self.model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            for n, tokens in zip(chunk, new_tokens):
                ids = tokens.tolist()
                stop = next((i for i, t in enumerate(ids) if t in eos), None)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                taken = len(ids) if stop is None else stop + 1
                answers[n] = GeneratedText(text, taken, stop is not None)
            if self.on_batch:
                self.on_batch(len(chunk))
        return answers


class EngineGenerator:
    """Answers through a served engine: llama.cpp for checkpoints written back to GGUF (CPU), or
    ``vllm serve`` (GPUs), the same engines the data pipeline's steps use. Requests go out
    concurrently up to the engine's ``max_concurrency``, retried on transient faults; an answer
    that still fails is ``None`` and its reason is kept (never an empty answer to be judged)."""

    def __init__(
        self,
        spec: ModelSpec,
        context: LLMContext,
        name: str,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        from tapir.serving.engines import engine_key
        from tapir.serving.llm_factory import build_llm

        engines = context.engine_set()
        shared = engine_key(spec) in engines.engines  # e.g. the embedded student is the judge too
        # no stop strings: whether the model ends its answer by itself is measured, not helped
        self.llm = build_llm(spec, "eval_model", context, step=f"eval_answers:{name}", turn_stop=False)
        self.engine = engines.ensure(spec, "eval_model", f"eval_answers:{name}")
        self.engines = None if shared else engines
        engines.start()
        self.llm.load()
        self.on_batch = on_batch
        self.failures: list[str] = []

    def generate(
        self, conversations: list[Conversation], max_new_tokens: int, temperature: float, seed: int
    ) -> list[str | None]:
        self.llm.seed = seed
        step = max(1, self.engine.max_concurrency)
        answers: list[str | None] = []
        for start in range(0, len(conversations), step):
            batch = conversations[start : start + step]
            outputs = self.llm.generate_outputs(
                inputs=batch, num_generations=1, max_new_tokens=max_new_tokens, temperature=temperature
            )
            for output in outputs:
                texts = output.get("generations") or [None]
                failure = next((f for f in output.get("failures") or [] if f), None)
                if texts[0] is None:
                    self.failures.append(failure or "no answer")
                    answers.append(None)
                    continue
                taken = ((output.get("statistics") or {}).get("output_tokens") or [None])[0]
                ended = None if not taken else taken < max_new_tokens  # the cap reached: cut short
                answers.append(GeneratedText(texts[0].strip(), taken or None, ended))
            if self.on_batch:
                self.on_batch(len(batch))
        return answers

    def close(self) -> None:
        """Stop this model's engine (each checkpoint has its own) unless another role shares it."""
        if self.engines is not None:
            self.engines.release(self.engine)


class CachedGenerator:
    """Answers from the cache when this model already answered this prompt with these settings;
    the engine is only loaded when something is missing."""

    def __init__(
        self,
        model_key: str,
        make_engine: Callable[[], Generator],
        cache_dir: Path,
        on_cached: Callable[[int], None] | None = None,
    ) -> None:
        self.model_key = model_key
        self.on_cached = on_cached
        self.make_engine = make_engine
        self.engine: Generator | None = None
        self.cache = open_cache(str(cache_dir / "eval_generations"))
        self.generated = 0
        self.cached = 0

    def _key(self, conversation: Conversation, max_new_tokens: int, temperature: float, seed: int) -> str:
        payload = json.dumps(
            [self.model_key, conversation, max_new_tokens, temperature, seed], sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def generate(
        self, conversations: list[Conversation], max_new_tokens: int, temperature: float, seed: int
    ) -> list[str]:
        keys = [self._key(c, max_new_tokens, temperature, seed) for c in conversations]
        stored = [self.cache.get(k) for k in keys]
        answers: list[str | None] = [None if s is None else GeneratedText.from_record(s) for s in stored]
        missing = [n for n, a in enumerate(answers) if a is None]
        self.cached += len(conversations) - len(missing)
        if self.on_cached and len(conversations) > len(missing):
            self.on_cached(len(conversations) - len(missing))
        if missing:
            if self.engine is None:
                self.engine = self.make_engine()
            fresh = self.engine.generate(
                [conversations[n] for n in missing], max_new_tokens, temperature, seed
            )
            failed = 0
            for n, answer in zip(missing, fresh):
                if answer is None:  # a served request that failed after its retries
                    failed += 1
                    continue
                answer = answer if isinstance(answer, GeneratedText) else GeneratedText(answer)
                answers[n] = answer
                self.cache.set(keys[n], answer.record())
            self.generated += len(missing) - failed
            if failed:
                reasons = getattr(self.engine, "failures", []) or ["unknown"]
                raise EvaluationError(
                    f"evaluation: {failed} of {len(missing)} answers from {self.model_key[:40]} failed "
                    f"after retries (last: {reasons[-1][:160]}); the {len(missing) - failed} that "
                    "came back are cached, so a rerun asks only for the rest"
                )
        return [a if a is not None else GeneratedText("") for a in answers]

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()
