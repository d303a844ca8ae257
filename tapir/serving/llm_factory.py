"""Build a distilabel LLM for a role from the recipe (what each backend is: ``tapir.serving.backends``).

Also the pre-flight checks: an unreachable endpoint, a missing GGUF file or an uninstalled
engine is reported before any step runs, naming the recipe field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilabel.models.llms.base import LLM

from tapir.chat_templates import resolve_chat_template
from tapir.errors import EndpointError
from tapir.recipe import ModelSpec
from tapir.serving.backends import OPENAI_DEFAULT_URL, backend_of, endpoint_url
from tapir.serving.batch_api import LEDGER_FOLDER
from tapir.serving.embedded import embedded_model, unservable
from tapir.serving.engine_client import TapirEngineClient
from tapir.serving.engines import EngineSet, resolved_template, served_name
from tapir.serving.llms import TapirTransformersLLM
from tapir.serving.simulator import PREFLIGHT_ROLE, ROLE_HEADER
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
    max_spend_usd: float | None = None  # clients stop asking once the run spent this

    def engine_set(self) -> EngineSet:
        if self.engines is None:
            self.engines = EngineSet(self.cache_dir, seed=self.seed)
        return self.engines


def model_id(spec: ModelSpec) -> str:
    """What the model is. A tapir checkpoint adds its run key: a round re-trained into the same
    folder is another model, and the response cache must not answer for it."""
    if (embedded := embedded_model(spec.model)) is not None:
        return embedded.model_id
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
    turn_stop: bool = True,
) -> LLM:
    """A fresh distilabel LLM for one step (each step needs its own instance).

    Served backends (llamacpp, vllm, scripted, openai) give a client of the run's one engine
    for that model; only ``transformers`` still loads a model inside the step."""
    backend = backend_of(spec.backend)
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
    if backend.served:
        engine = context.engine_set().ensure(spec, role, step)
        api_key = None
        if backend.remote:
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
            stop=TURN_STOP if turn_stop and resolved_template(spec) and backend.runs_gguf else [],
            seed=seed,
            supports_n=engine.supports_n,
            top_logprobs=top_logprobs,
            batch=spec.batch,
            batch_poll_s=spec.batch_poll_s,
            batch_dir=str(context.cache_dir / LEDGER_FOLDER),
            price=spec.unit_price(),
            spend_dir=str(context.usage_dir) if context.usage_dir else None,
            max_spend_usd=context.max_spend_usd,
            generation_kwargs=generation,
            **common,
        )
    template = resolved_template(spec)  # in-process: the model loads inside the step
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


def _api_key(spec: ModelSpec, role: str) -> str:
    key = os.environ.get(spec.api_key_env)
    if key:
        if any(ch.isspace() or not ch.isprintable() for ch in key):
            raise EndpointError(
                f"{role}.api_key_env: the value of {spec.api_key_env} holds a space, line break or "
                "control character; a key is one token (check how the variable was set)"
            )
        return key
    if endpoint_url(spec) == OPENAI_DEFAULT_URL:
        raise EndpointError(
            f"{role}.api_key_env: environment variable {spec.api_key_env} is not set "
            f"(needed for {OPENAI_DEFAULT_URL})"
        )
    # Self-hosted servers (vLLM, llama.cpp) accept any key unless started with one.
    return "not-needed"


def preflight(spec: ModelSpec, role: str, timeout_s: float = 5.0, top_logprobs: int | None = None) -> None:
    """Fail fast, naming the field, when a role's model cannot possibly be used. ``top_logprobs``:
    the role's answers must carry token log-probabilities (a judge read as expected scores)."""
    backend = backend_of(spec.backend)
    if missing := backend.missing():
        raise EndpointError(f"{role}.backend: {missing}")
    if embedded_model(spec.model) is None and (wrong := backend.check_model(spec.model, role)):
        raise EndpointError(wrong)
    if wrong := unservable(spec.model, backend, role):
        raise EndpointError(wrong)
    if backend.remote:
        EndpointCheck(spec, role, timeout_s).run(top_logprobs)
    if spec.chat_template:
        resolve_chat_template(spec.chat_template, f"{role}.chat_template")


class _Transient(Exception):
    """One attempt's answer that says nothing about the endpoint's setup (asked again)."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


class EndpointCheck:
    """The pre-flight of an OpenAI-compatible endpoint: its model list, then a one-token chat
    completion (with log-probabilities when the role needs them).

    It retries like any call (the role's ``max_retries``, 4 to 8 attempts, with back-off and
    Retry-After): a flaky endpoint is not a wrong one. Only an answer that proves the setup
    wrong ends the run before it starts (exit 2): a rejected key, a 404, a model not served, and
    -- when every attempt said the same -- a refused connection, a body that is not OpenAI's, a
    chat answer without log-probabilities. Attempts that all failed in passing ways (5xx, 429,
    time-outs, dropped connections, a mix) let the run start: its own retries and failure
    counts deal with them.
    """

    MIN_ATTEMPTS = 4
    MAX_ATTEMPTS = 8  # a refused port is not worth a hundred retries before the run even starts
    BACKOFF_S = 0.25
    BACKOFF_CAP_S = 4.0

    def __init__(self, spec: ModelSpec, role: str, timeout_s: float) -> None:
        self.spec, self.role, self.timeout_s = spec, role, timeout_s
        self.base_url = endpoint_url(spec)
        self.key = _api_key(spec, role)
        self.attempts = min(max(spec.max_retries + 1, self.MIN_ATTEMPTS), self.MAX_ATTEMPTS)

    def run(self, top_logprobs: int | None = None) -> None:
        served = self._retry(self._models)
        if served is not None and served and self.spec.model not in served and "any" not in served:
            shown = ", ".join(str(name) for name in served[:5]) + (" …" if len(served) > 5 else "")
            raise EndpointError(
                f"{self.role}.model: {self.base_url} does not serve {self.spec.model!r} (it serves {shown})"
            )
        if self.spec.batch:
            self._retry(self._batches)
        checked = (self.base_url, self.spec.model, bool(top_logprobs))
        if checked in _CHAT_CHECKED:
            return
        if self._retry(lambda: self._chat(top_logprobs)) is not None:
            _CHAT_CHECKED.add(checked)

    def _retry(self, attempt: Any) -> Any:
        """``attempt()``'s result; None when every attempt failed in passing ways; the one
        error line when they all failed the same way that proves the setup wrong."""
        import random
        import time

        kinds: list[str] = []
        last: _Transient | None = None
        for number in range(self.attempts):
            try:
                return attempt()
            except _Transient as transient:
                kinds.append(transient.kind)
                last = transient
            if number + 1 < self.attempts:
                delay = random.uniform(0, min(self.BACKOFF_CAP_S, self.BACKOFF_S * 2**number))
                time.sleep(min(max(delay, last.retry_after or 0.0), 10.0))
        assert last is not None
        if len(set(kinds)) == 1 and last.kind in _PROOF:
            raise EndpointError(_PROOF[last.kind].format(check=self, detail=last.detail, n=self.attempts))
        return None

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.key}", ROLE_HEADER: PREFLIGHT_ROLE}
        try:
            response = httpx.request(
                method, f"{self.base_url}/{path}", headers=headers, timeout=self.timeout_s, **kwargs
            )
        except httpx.ConnectError as exc:
            raise _Transient("refused", _reason(exc)) from None
        except httpx.TimeoutException:
            raise _Transient("timeout", "time-out") from None
        except httpx.HTTPError as exc:  # dropped mid-answer, a broken body
            raise _Transient("dropped", _reason(exc)) from None
        if response.status_code in (401, 403):
            what = "" if path == "models" else " for a chat completion"
            raise EndpointError(
                f"{self.role}.api_key_env: {self.base_url} rejected the key in {self.spec.api_key_env}"
                f"{what} (HTTP {response.status_code})"
            )
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("retry-after")
            try:
                wait = float(retry_after) if retry_after else None
            except ValueError:
                wait = None
            raise _Transient("busy", f"HTTP {response.status_code}", wait)
        return response

    def _models(self) -> list[str]:
        response = self._send("GET", "models")
        try:
            if response.status_code != 200:
                raise ValueError
            return [m.get("id") for m in response.json()["data"]]
        except (ValueError, AttributeError, KeyError, TypeError):
            if response.status_code == 404:
                raise EndpointError(_PROOF["models"].format(check=self, detail="HTTP 404", n=1)) from None
            raise _Transient("models", f"HTTP {response.status_code}") from None

    def _batches(self) -> bool:
        """A ``batch: true`` role needs the Batch API: its list of batches must answer."""
        response = self._send("GET", "batches", params={"limit": 1})
        if response.status_code in (404, 405):
            raise EndpointError(
                f"{self.role}.batch: {self.base_url} has no Batch API (GET /batches: HTTP "
                f"{response.status_code}); set {self.role}.batch: false to send requests one by one"
            )
        if response.status_code != 200:
            raise _Transient("batches", f"HTTP {response.status_code}")
        return True

    def _chat(self, top_logprobs: int | None) -> bool:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
        }
        if top_logprobs:
            body.update(logprobs=True, top_logprobs=top_logprobs)
        response = self._send("POST", "chat/completions", json=body)
        try:
            choices = response.json()["choices"] if response.status_code == 200 else None
            ok = isinstance(choices, list) and bool(choices) and isinstance(choices[0].get("message"), dict)
        except (ValueError, AttributeError, KeyError, TypeError):
            ok = False
        if not ok:
            if response.status_code == 404:
                raise EndpointError(_PROOF["chat"].format(check=self, detail="HTTP 404", n=1))
            raise _Transient("chat", f"HTTP {response.status_code}")
        if top_logprobs and not (choices[0].get("logprobs") or {}).get("content"):
            raise _Transient("logprobs", "no log-probabilities")
        return True


def _reason(exc: Exception) -> str:
    return type(exc).__name__.replace("Error", " error").strip().lower()


# Failures that prove the setup wrong when every attempt ends the same way.
_PROOF = {
    "refused": "{check.role}.base_url: cannot reach {check.base_url} ({detail}, {n} attempts)",
    "timeout": "{check.role}.base_url: cannot reach {check.base_url} (every one of {n} attempts timed out)",
    "models": "{check.role}.base_url: {check.base_url}/models is not an OpenAI-compatible answer ({detail})",
    "chat": "{check.role}.base_url: {check.base_url}/chat/completions is not an OpenAI-compatible chat "
    "completion endpoint ({detail})",
    "logprobs": "judging.scoring: the judge at {check.base_url} answers without log-probabilities, which "
    "expected scores need (auto picks expected for an {check.spec.backend} judge); set "
    "judging.scoring: sampled, or serve the judge where logprobs work",
}

# (endpoint, model, with log-probabilities) whose chat completion answered well in this process.
_CHAT_CHECKED: set[tuple[str, str, bool]] = set()
