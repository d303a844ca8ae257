"""Build a distilabel LLM for a role from the recipe. The only module that knows backend names.

Also the pre-flight checks: an unreachable endpoint, a missing GGUF file or an uninstalled
engine is reported before any step runs, naming the recipe field.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilabel.models.llms.base import LLM

from tapir.chat_templates import resolve_chat_template
from tapir.embedded import EMBEDDED, EMBEDDED_MODEL_ID
from tapir.engine_client import TapirEngineClient
from tapir.engines import OPENAI_DEFAULT_URL, SERVED_BACKENDS, EngineSet, resolved_template, served_name
from tapir.errors import EndpointError
from tapir.llms import TapirTransformersLLM
from tapir.recipe import ModelSpec
from tapir.simulator import PREFLIGHT_ROLE, ROLE_HEADER
from tapir.stage_contract import CHECKPOINT_ID

# Stops a base model that runs past its turn in tapir's chat template.
TURN_STOP = ["### Instruction:", "### Instructions:", "\n### Input:"]


def score_grammar(low: int = 1, high: int = 10) -> str:
    """GBNF for an MT-Bench style verdict, ``Rating: [[n]]`` with low <= n <= high."""
    choices = " | ".join(f'"{n}"' for n in sorted(range(low, high + 1), key=lambda n: -len(str(n))))
    return f'root ::= "Rating: [[" ({choices}) "]]"'


def choice_constraint(options: list[str], description: str = "") -> Constraint:
    """Exactly one of ``options``: a GBNF grammar for llama.cpp, guided choice for vLLM."""
    return Constraint(choice_grammar(options), description, choices=tuple(options))


def score_constraint(low: int = 1, high: int = 10) -> Constraint:
    """``Rating: [[n]]``: a GBNF grammar for llama.cpp, the same as a regex for vLLM."""
    numbers = "|".join(str(n) for n in range(high, low - 1, -1))
    regex = r"Rating: \[\[(" + numbers + r")\]\]"
    return Constraint(score_grammar(low, high), f"Rating: [[{low}-{high}]]", regex=regex)


def choice_grammar(options: list[str]) -> str:
    """GBNF that accepts exactly one of ``options``."""
    escaped = [o.replace("\\", "\\\\").replace('"', '\\"') for o in options]
    return "root ::= " + " | ".join(f'"{o}"' for o in escaped)


@dataclass(frozen=True)
class Constraint:
    """What an answer must look like. Engines that can enforce it do (a llama.cpp grammar,
    vLLM's guided choice or regex); for the others the step's parser still counts every
    answer that does not fit."""

    grammar: str
    description: str = ""
    choices: tuple[str, ...] | None = None
    regex: str | None = None


@dataclass
class LLMContext:
    """Run-wide settings every LLM gets."""

    cache_dir: Path
    usage_dir: Path | None = None
    seed: int = 42
    dry_run: bool = False  # build everything, call nothing: a missing API key is only noted
    reask_unparsed: bool = False  # cached answers that failed to parse are asked again
    engines: EngineSet | None = None  # the run's engines; steps are their clients

    def engine_set(self) -> EngineSet:
        if self.engines is None:
            self.engines = EngineSet(self.cache_dir, seed=self.seed)
        return self.engines


def model_id(spec: ModelSpec) -> str:
    """What the model is. A tapir checkpoint adds its run key: a round re-trained into the same
    folder is another model, and the response cache must not answer for it."""
    if spec.model == EMBEDDED:
        return EMBEDDED_MODEL_ID
    marker = Path(spec.model).expanduser() / CHECKPOINT_ID
    if marker.is_file():
        key = json.loads(marker.read_text(encoding="utf-8")).get("key", "")
        return f"{spec.model}@{key[:16]}"
    return spec.model


def build_llm(
    spec: ModelSpec,
    role: str,
    context: LLMContext,
    *,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    constraint: Constraint | None = None,
    step: str | None = None,
    top_logprobs: int | None = None,
) -> LLM:
    """A fresh distilabel LLM for one step (each step needs its own instance).

    Served backends (llamacpp, vllm, scripted, openai) give a client of the run's one engine
    for that model; only ``transformers`` still loads a model inside the step."""
    generation = {
        "max_new_tokens": max_new_tokens or spec.generation.max_new_tokens,
        "temperature": spec.generation.temperature if temperature is None else temperature,
        "top_p": spec.generation.top_p,
    }
    seed = context.seed if spec.seed is None else spec.seed
    common: dict[str, Any] = {
        "role": role,
        "model_id": model_id(spec),
        "usage_dir": str(context.usage_dir) if context.usage_dir else None,
        "response_cache_dir": str(context.cache_dir / "responses"),
        "step": step or role,
        "reask_unparsed": context.reask_unparsed,
    }
    if spec.backend in SERVED_BACKENDS:
        engine = context.engine_set().ensure(spec, role, step)
        api_key = None
        if spec.backend == "openai":
            dry = context.dry_run and not os.environ.get(spec.api_key_env)
            api_key = "dry-run" if dry else _api_key(spec, role)
        return TapirEngineClient(
            model=served_name(spec),
            base_url=engine.base_url,
            api_key=api_key,
            slot_dir=engine.slot_dir,
            max_concurrency=engine.max_concurrency,
            timeout=int(spec.timeout_s),
            max_retries=spec.max_retries,
            guided=engine.guided,
            grammar=constraint.grammar if constraint else None,
            choices=list(constraint.choices) if constraint and constraint.choices else None,
            regex=constraint.regex if constraint else None,
            stop=TURN_STOP if resolved_template(spec) and spec.backend == "llamacpp" else [],
            seed=seed,
            supports_n=engine.supports_n,
            top_logprobs=top_logprobs,
            generation_kwargs=generation,
            **common,
        )
    if spec.backend == "transformers":
        template = resolved_template(spec)
        sampling = {**generation, "do_sample": generation["temperature"] > 0}
        if not sampling["do_sample"]:
            sampling.pop("temperature")
        return TapirTransformersLLM(
            model=spec.model,
            chat_template=template.read_text(encoding="utf-8") if template else None,
            generation_kwargs=sampling,
            **spec.options,
            **common,
        )
    raise EndpointError(f"{role}.backend: unknown backend {spec.backend!r}")  # schema forbids it


def _api_key(spec: ModelSpec, role: str) -> str:
    key = os.environ.get(spec.api_key_env)
    if key:
        return key
    if (spec.base_url or OPENAI_DEFAULT_URL).rstrip("/") == OPENAI_DEFAULT_URL:
        raise EndpointError(
            f"{role}.api_key_env: environment variable {spec.api_key_env} is not set "
            f"(needed for {OPENAI_DEFAULT_URL})"
        )
    # Self-hosted servers (vLLM, llama.cpp) accept any key unless started with one.
    return "not-needed"


def preflight(spec: ModelSpec, role: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the field, when a role's model cannot possibly be used."""
    if spec.backend == "llamacpp":
        if spec.model != EMBEDDED and not Path(spec.model).is_file():
            raise EndpointError(f"{role}.model: GGUF file not found: {spec.model}")
        if importlib.util.find_spec("llama_cpp") is None:
            raise EndpointError(
                f"{role}.backend: llamacpp needs llama-cpp-python (pip install llama-cpp-python)"
            )
    elif spec.backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise EndpointError(
                f"{role}.backend: vllm is not installed here (GPU machines: pip install vllm)"
            )
    elif spec.backend == "transformers":
        looks_local = spec.model.startswith((".", "/", "~")) or Path(spec.model).suffix
        if looks_local and not Path(spec.model).expanduser().exists():
            raise EndpointError(f"{role}.model: model folder not found: {spec.model}")
    elif spec.backend == "openai":
        _check_endpoint(spec, role, timeout_s)
    if spec.chat_template:
        resolve_chat_template(spec.chat_template, f"{role}.chat_template")


def _check_endpoint(spec: ModelSpec, role: str, timeout_s: float) -> None:
    import httpx

    base_url = (spec.base_url or OPENAI_DEFAULT_URL).rstrip("/")
    key = _api_key(spec, role)
    try:
        response = httpx.get(
            f"{base_url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s
        )
    except httpx.HTTPError as exc:
        reason = type(exc).__name__.replace("Error", " error").strip().lower()
        raise EndpointError(f"{role}.base_url: cannot reach {base_url} ({reason})") from None
    if response.status_code in (401, 403):
        raise EndpointError(
            f"{role}.api_key_env: {base_url} rejected the key in {spec.api_key_env} "
            f"(HTTP {response.status_code})"
        )
    try:
        if response.status_code != 200:
            raise ValueError
        served = [m.get("id") for m in response.json()["data"]]
    except (ValueError, AttributeError, KeyError, TypeError):
        raise EndpointError(
            f"{role}.base_url: {base_url}/models is not an OpenAI-compatible answer "
            f"(HTTP {response.status_code})"
        ) from None
    if served and spec.model not in served and "any" not in served:
        shown = ", ".join(str(name) for name in served[:5]) + (" …" if len(served) > 5 else "")
        raise EndpointError(f"{role}.model: {base_url} does not serve {spec.model!r} (it serves {shown})")
    _check_chat_completion(spec, role, base_url, key, timeout_s)


def _check_chat_completion(spec: ModelSpec, role: str, base_url: str, key: str, timeout_s: float) -> None:
    """One tiny completion (1 token): a server that lists models but cannot answer a chat request
    (a proxy that 404s it, an HTML login page) is one line now, not a run of failed rows. A
    transient answer (time-out, 429, 5xx) is not a verdict on the endpoint: the run's own
    retries deal with it."""
    import httpx

    if (base_url, spec.model) in _CHAT_CHECKED:
        return
    body = {"model": spec.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    headers = {"Authorization": f"Bearer {key}", ROLE_HEADER: PREFLIGHT_ROLE}
    try:
        response = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        return
    except httpx.HTTPError as exc:
        reason = type(exc).__name__.replace("Error", " error").strip().lower()
        raise EndpointError(f"{role}.base_url: cannot reach {base_url} ({reason})") from None
    if response.status_code == 429 or response.status_code >= 500:
        return
    if response.status_code in (401, 403):
        raise EndpointError(
            f"{role}.api_key_env: {base_url} rejected the key in {spec.api_key_env} for a chat completion "
            f"(HTTP {response.status_code})"
        )
    try:
        choices = response.json()["choices"] if response.status_code == 200 else None
        ok = isinstance(choices, list) and bool(choices) and isinstance(choices[0].get("message"), dict)
    except (ValueError, AttributeError, KeyError, TypeError):
        ok = False
    if not ok:
        raise EndpointError(
            f"{role}.base_url: {base_url}/chat/completions is not an OpenAI-compatible chat completion "
            f"endpoint (HTTP {response.status_code})"
        )
    _CHAT_CHECKED.add((base_url, spec.model))


# (endpoint, model) pairs whose chat completion answered well in this process: asked once.
_CHAT_CHECKED: set[tuple[str, str]] = set()
