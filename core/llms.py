"""distilabel LLM classes with tapir's additions: a response cache, usage accounting and the
embedded model.

Every role's LLM records each batch it generates (calls, tokens, empty generations) to a
JSONL file per process, because distilabel runs steps in worker processes and a cached step
makes no call at all: counting real calls is how we prove an unchanged re-run makes zero.
Answers are also kept in a content-addressed cache (model settings + prompt), so when a recipe
changes only the prompts that changed reach a model.
The classes must be importable by name (distilabel reloads steps from its cache YAML), which
is why each backend has a small named subclass rather than one built at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from distilabel.models.llms import LlamaCppLLM, OpenAILLM, TransformersLLM, vLLM
from pydantic import BaseModel, Field, PrivateAttr

USAGE_FILE_PREFIX = "usage"


class UsageLoggingMixin(BaseModel):
    """Appends one JSON line per generated batch to ``<usage_dir>/usage.<role>.<pid>.jsonl``."""

    role: str = Field("unknown", description="teacher, student or judge: whose calls these are.")
    model_id: str = Field("", description="What model this is, for the signature and the manifest.")
    # exclude=True keeps the path out of distilabel's step signature and cache YAML, so a run
    # in another folder still hits the cache; distilabel copies it back onto cached steps.
    usage_dir: str | None = Field(None, exclude=True)
    response_cache_dir: str | None = Field(None, exclude=True)

    def generate_outputs(self, inputs: list[Any], num_generations: int = 1, **kwargs: Any):  # type: ignore[override]
        cache = open_cache(self.response_cache_dir)
        keys = [self._cache_key(i, num_generations, kwargs) for i in inputs]
        outputs: list[Any] = [cache.get(k) if cache is not None else None for k in keys]
        missing = [n for n, out in enumerate(outputs) if out is None]
        if missing:
            started = time.perf_counter()
            fresh = super().generate_outputs(  # type: ignore[misc]
                inputs=[inputs[n] for n in missing], num_generations=num_generations, **kwargs
            )
            self._log_usage(fresh, len(missing) * num_generations, time.perf_counter() - started)
            for n, out in zip(missing, fresh):
                outputs[n] = out
                if cache is not None and _complete(out):
                    cache.set(keys[n], out)
        return outputs

    def _cache_key(self, input: Any, num_generations: int, kwargs: dict[str, Any]) -> str:
        settings = {k: v for k, v in self.dump().items() if "key" not in k and "token" not in k}
        payload = json.dumps(
            [type(self).__name__, settings, input, num_generations, kwargs], sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def _log_usage(self, outputs: list[dict[str, Any]], calls: int, seconds: float) -> None:
        if not self.usage_dir:
            return
        input_tokens = output_tokens = empty = 0
        for output in outputs:
            stats = output.get("statistics") or {}
            input_tokens += sum(t or 0 for t in _as_list(stats.get("input_tokens")))
            output_tokens += sum(t or 0 for t in _as_list(stats.get("output_tokens")))
            empty += sum(1 for g in output.get("generations") or [] if g is None or not str(g).strip())
        record = {
            "role": self.role,
            "model_id": self.model_id,
            "calls": calls,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "empty_generations": empty,
            "seconds": round(seconds, 3),
        }
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
    """Only answers that arrived are cached: a failed call must be retried next run."""
    generations = output.get("generations") or []
    return bool(generations) and all(g is not None for g in generations)


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
            role = totals.setdefault(
                record["role"],
                {"calls": 0, "input_tokens": 0, "output_tokens": 0, "empty_generations": 0, "seconds": 0.0},
            )
            for key in role:
                role[key] += record.get(key, 0)
    return totals


class TapirLlamaCppLLM(UsageLoggingMixin, LlamaCppLLM):
    """llama.cpp with a chat template file and an optional GBNF grammar.

    The embedded GGUF carries no chat template; llama.cpp then falls back to a llama-2 layout
    and the base model answers with empty text. We install our own template (the file the
    student is later trained with). A grammar makes judge and classifier answers parse.
    """

    chat_template_file: str | None = Field(
        None, description="Jinja chat template file to format prompts with."
    )
    chat_template_text: str | None = Field(
        None, description="The template's text, so that editing the file invalidates the cache."
    )
    grammar: str | None = Field(None, description="GBNF grammar every generation must follow.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")

    _grammar: Any = PrivateAttr(None)

    def load(self) -> None:
        super().load()
        from llama_cpp import LlamaGrammar
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.chat_template_text
        if template is None and self.chat_template_file:
            template = Path(self.chat_template_file).read_text(encoding="utf-8")
        if template is not None:
            model = self._model
            assert model is not None
            vocab_token = model._model.token_get_text  # type: ignore[attr-defined]
            formatter = Jinja2ChatFormatter(
                template=strip_generation_markers(template),
                eos_token=vocab_token(model.token_eos()),
                bos_token=vocab_token(model.token_bos()),
                stop_token_ids=[model.token_eos()],
            )
            model.chat_handler = formatter.to_chat_handler()
        if self.grammar:
            self._grammar = LlamaGrammar.from_string(self.grammar, verbose=False)

    def _generate_chat_completion(
        self,
        input: Any,
        max_new_tokens: int = 128,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        extra_generation_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        extra = dict(extra_generation_kwargs or {})
        if self._grammar is not None:
            extra.setdefault("grammar", self._grammar)
        if self.stop:
            extra.setdefault("stop", list(self.stop))
        return super()._generate_chat_completion(
            input, max_new_tokens, frequency_penalty, presence_penalty, temperature, top_p, extra
        )

    @property
    def model_name(self) -> str:
        return self.model_id or super().model_name


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


class TapirOpenAILLM(UsageLoggingMixin, OpenAILLM):
    """Any OpenAI-compatible endpoint: OpenAI, a vLLM server, a llama.cpp server."""


class TapirvLLM(UsageLoggingMixin, vLLM):
    """In-process vLLM (GPU machines)."""


class TapirTransformersLLM(UsageLoggingMixin, TransformersLLM):
    """In-process transformers."""
