"""The one client every step uses to reach an engine (``tapir.serving.engines``).

It is distilabel's ``OpenAILLM`` (so a step is an ordinary distilabel Task) with what a shared
engine needs from its clients:

- **guided decoding passes through**: a llama.cpp engine gets the step's GBNF ``grammar``, a
  vLLM engine ``structured_outputs`` choice / regex (``guided_choice`` / ``guided_regex`` for a
  server older than 0.10.2, read from its ``/version``: newer ones ignore those fields and
  answer unconstrained); judge and classifier answers keep parsing;
- **one concurrency cap per engine across all steps**: distilabel runs each step in its own
  process, so the cap is a set of ``max_concurrency`` slot files that a request holds an
  exclusive ``flock`` on while it is in flight (the kernel frees a dead process's slots);
- **bounded retries**: connection errors, time-outs, 429, 5xx and bodies that are not a chat
  completion are retried with exponential back-off and full jitter, honouring ``Retry-After``;
  every retry and every final failure is counted per role in the usage log (and so in the run
  summary). A final failure is a ``None`` generation with its reason (``failures``), which
  the response cache never stores and the step writes into the row's error column — one
  failed request never takes its batch down. A 4xx is not retried (the request itself is
  wrong); a prompt the server finds too long is counted as "prompt too long". An empty answer
  is asked again like a fault (a proxy's empty body and a model's silence look alike on the
  wire) and kept only when every attempt is empty.
  Error bodies are scrubbed of the caller's key before they go anywhere.

The engine's address is excluded from distilabel's step signature and from the response cache
key: a run on another port is still the same model.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from distilabel.models.llms import OpenAILLM
from distilabel.models.llms.utils import prepare_output
from pydantic import Field, PrivateAttr, SecretStr

from tapir.manifest import scrub
from tapir.pricing import usd
from tapir.serving.batch_api import LEDGER_FOLDER, BatchLedger, BatchRound
from tapir.serving.llms import TOP_LOGPROBS, UsageLoggingMixin
from tapir.serving.simulator import ROLE_HEADER

SPEND_FILE_PREFIX = "spend"
SPEND_READ_EVERY_S = 0.5
_PROCESS_SPEND: dict[str, float] = {}  # this process's spend per role (its spend file's content)
SLOT_POLL_S = 0.002
SLOT_POLL_MAX_S = 0.02
#: vLLM took ``structured_outputs`` from 0.10.2 on and dropped ``guided_*`` in 0.12 (ignored, not
#: refused: a constraint sent the old way is silently lost).
STRUCTURED_OUTPUTS_SINCE = "0.10.2"
# How servers say a prompt does not fit (vLLM, llama.cpp, OpenAI, TGI wordings).
_TOO_LONG = re.compile(
    r"context length|context window|too long|too many tokens|exceeds? (the )?(maximum|max|context)|"
    r"maximum (context|input|prompt)|n_ctx|max_model_len|longer than",
    re.IGNORECASE,
)


class SlotLimiter:
    """At most ``size`` requests in flight to one engine, across processes (flock'ed files).

    Each process keeps the slot files open and one poller task hands free slots to its waiting
    requests in order, so a thousand queued requests cost one scan per poll, not a thousand.
    """

    def __init__(self, folder: str, size: int) -> None:
        self.folder = Path(folder)
        self.size = size
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pid = -1
        self._fds: dict[int, int] = {}
        self._held: set[int] = set()
        self._waiters: collections.deque[asyncio.Future[int]] = collections.deque()
        self._poller: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def slot(self):
        index = await self._acquire()
        try:
            yield
        finally:
            self._release(index)

    def _fd(self, index: int) -> int:
        if self._pid != os.getpid():  # forked: the parent's descriptors share its locks
            self._pid, self._fds, self._held = os.getpid(), {}, set()
            self._waiters, self._poller = collections.deque(), None
        fd = self._fds.get(index)
        if fd is None:
            fd = self._fds[index] = os.open(self.folder / f"slot-{index}", os.O_CREAT | os.O_RDWR, 0o600)
        return fd

    def _try_any(self) -> int | None:
        for index in random.sample(range(self.size), self.size):
            if index in self._held:
                continue
            try:
                fcntl.flock(self._fd(index), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            self._held.add(index)
            return index
        return None

    def _release(self, index: int) -> None:
        fcntl.flock(self._fd(index), fcntl.LOCK_UN)
        self._held.discard(index)

    async def _acquire(self) -> int:
        self._fd(0)  # (re)initialise after a fork before touching the queue
        if not self._waiters:
            index = self._try_any()
            if index is not None:
                return index
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._waiters.append(future)
        if self._poller is None or self._poller.done() or self._poller.get_loop() is not loop:
            self._poller = loop.create_task(self._poll())
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(future.result())
            raise

    async def _poll(self) -> None:
        wait = SLOT_POLL_S
        loop = asyncio.get_running_loop()
        while True:
            # cancelled while waiting, or left behind by an event loop that is gone
            while self._waiters and (self._waiters[0].done() or self._waiters[0].get_loop() is not loop):
                self._waiters.popleft()
            if not self._waiters:
                return
            index = self._try_any()
            if index is not None:
                self._waiters.popleft().set_result(index)
                wait = SLOT_POLL_S
                continue
            await asyncio.sleep(wait * (0.5 + random.random()))
            wait = min(wait * 2, SLOT_POLL_MAX_S)


class TapirEngineClient(UsageLoggingMixin, OpenAILLM):
    """A step's client of one engine (see the module docstring)."""

    base_url: str = Field("", exclude=True, description="The engine's /v1 address (set when built).")
    api_key: SecretStr | None = Field(None, exclude=True)
    slot_dir: str | None = Field(None, exclude=True)
    max_concurrency: int | None = Field(None, exclude=True)
    retry_base_s: float = Field(0.5, exclude=True)
    retry_cap_s: float = Field(30.0, exclude=True)
    guided: str | None = Field(None, description="How constraints travel: grammar, choice_regex or none.")
    grammar: str | None = Field(None, description="GBNF grammar every generation must follow.")
    choices: list[str] | None = Field(None, description="The only answers allowed (vLLM's choice).")
    regex: str | None = Field(None, description="A regex every answer must match (vLLM's regex).")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")
    seed: int | None = Field(None, description="Sampling seed sent with each request.")
    supports_n: bool = Field(True, description="False: one request per generation.")
    top_logprobs: int | None = Field(
        None, description="Ask this many alternatives per token (expected judge scores); None: none."
    )
    # How requests travel and what they cost, not what they ask: out of the step signature and
    # the response cache key (a batch answer is the online answer).
    batch: bool = Field(
        False, exclude=True, description="Send through the Batch API (tapir.serving.batch_api)."
    )
    batch_poll_s: float = Field(30.0, exclude=True, description="Seconds between polls of a batch.")
    batch_dir: str | None = Field(None, exclude=True, description="The batch ledger's folder.")
    price: dict[str, float] | None = Field(
        None, exclude=True, description="$ per million input/output tokens, the batch discount applied."
    )
    spend_dir: str | None = Field(None, exclude=True, description="Where each process's spend is kept.")
    max_spend_usd: float | None = Field(
        None, exclude=True, description="Stop asking once the run spent this."
    )

    _limiter: SlotLimiter | None = PrivateAttr(None)
    _call_stats: dict[str, Any] = PrivateAttr(default_factory=dict)
    # How a vLLM server takes constraints: "structured_outputs" (0.10.2 and later) or "guided"
    # (older); None until its /version is read, on the first request.
    _vllm_fields: str | None = PrivateAttr(None)
    _round: BatchRound | None = PrivateAttr(None)
    _batch_ids: list[str] = PrivateAttr(default_factory=list)
    _spend_seen: tuple[float, float] = PrivateAttr((0.0, 0.0))  # (when read, run total)

    def load(self) -> None:
        if self.api_key is None:
            self.api_key = SecretStr("not-needed")
        super().load()
        # Retries are ours (counted, Retry-After honoured); the SDK's own would hide them.
        self._aclient = self._aclient.with_options(max_retries=0)
        if self.slot_dir and self.max_concurrency:
            self._limiter = SlotLimiter(self.slot_dir, self.max_concurrency)

    @property
    def model_name(self) -> str:
        return self.model_id or self.model

    async def _agenerate(self, inputs: list[Any], num_generations: int = 1, **kwargs: Any) -> list[Any]:  # type: ignore[override]
        """Online: one request per input (distilabel's gather). Batch: the same requests, sent
        as one API batch once every input has made its own (``tapir.serving.batch_api``)."""
        if not self.batch or not inputs:
            return await super()._agenerate(inputs, num_generations, **kwargs)
        per_input = 1 if self.supports_n or num_generations == 1 else num_generations
        ledger = BatchLedger(
            self.batch_dir or Path(self.slot_dir or ".") / LEDGER_FOLDER, self.role, self.base_url
        )
        self._round = BatchRound(self, len(inputs) * per_input, ledger)
        try:
            return await super()._agenerate(inputs, num_generations, **kwargs)
        finally:
            self._round = None

    async def agenerate(  # type: ignore[override]
        self,
        input: Any,
        num_generations: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
    ):
        penalties = {"frequency_penalty": frequency_penalty, "presence_penalty": presence_penalty}
        if self.supports_n or num_generations == 1:
            requests = [(num_generations, 0)]
        else:
            requests = [(1, index) for index in range(num_generations)]
        results = await asyncio.gather(
            *(
                self._request(input, n, index, max_new_tokens, temperature, top_p, penalties)
                for n, index in requests
            )
        )
        generations: list[str | None] = []
        token_logprobs: list[Any] = []
        failures: list[str | None] = []
        input_tokens: list[int] = []
        output_tokens: list[int] = []
        for n, result in zip((n for n, _ in requests), results):
            if isinstance(result, str):  # the request failed for good: why
                generations += [None] * n
                token_logprobs += [None] * n
                failures += [result] * n
                input_tokens += [0] * n
                output_tokens += [0] * n
                continue
            texts, prompt_tokens, completion_tokens, logprobs = result
            generations += texts
            token_logprobs += logprobs
            failures += [None] * len(texts)
            input_tokens += [prompt_tokens] * len(texts)
            output_tokens += [completion_tokens // max(1, len(texts))] * len(texts)
        output = prepare_output(generations, input_tokens=input_tokens, output_tokens=output_tokens)
        if any(failures):
            output["failures"] = failures  # type: ignore[typeddict-unknown-key]
        if self.top_logprobs:
            output[TOP_LOGPROBS] = token_logprobs  # type: ignore[literal-required]
        self.remember_answer(input, output)
        return output

    def _body(
        self, n: int, index: int, max_new_tokens: int, temperature: float, top_p: float
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        if n > 1:
            body["n"] = n
        if self.seed is not None:
            body["seed"] = self.seed + index  # separate requests for one prompt must differ
        if self.stop:
            body["stop"] = list(self.stop)
        if self.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        extra_body: dict[str, Any] = {}
        if self.guided == "grammar" and self.grammar:
            extra_body["grammar"] = self.grammar
        elif self.guided == "choice_regex" and (self.choices or self.regex):
            constraint = {"choice": list(self.choices)} if self.choices else {"regex": self.regex}
            if self._vllm_fields == "guided":
                extra_body.update({f"guided_{kind}": value for kind, value in constraint.items()})
            else:
                extra_body["structured_outputs"] = constraint
        if extra_body:
            body["extra_body"] = extra_body
        return body

    async def _request(
        self,
        messages: Any,
        n: int,
        index: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        penalties: dict[str, float],
    ) -> tuple[list[str | None], int, int, list[Any]] | str:
        """The answer texts, token counts and (when asked) token log-probabilities, or why the
        request failed for good."""
        import openai
        from openai.types.chat import ChatCompletion

        if self.guided == "choice_regex" and self._vllm_fields is None:
            self._vllm_fields = await self._read_vllm_fields()
        body = self._body(n, index, max_new_tokens, temperature, top_p)
        body.update({k: v for k, v in penalties.items() if v})
        if self._round is not None:
            return await self._round.ask(messages, body)
        headers = self._headers()
        empties = 0
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            if capped := self._spend_cap_reached():
                self._count_failure("spend cap reached")
                return capped
            try:
                async with self._slot():
                    self._count("requests")
                    completion = await self._aclient.chat.completions.create(
                        messages=messages, extra_headers=headers, timeout=self.timeout, **body
                    )
                if isinstance(completion, ChatCompletion) and completion.choices:
                    answer = _answer(completion)
                    texts = answer[0]
                    # An empty answer is what a flaky proxy sends and what a model may really
                    # say: asked again at once (no back-off), and taken as the model's answer
                    # only when every attempt was empty.
                    self._record_spend(answer[1], answer[2])
                    if all(t.strip() for t in texts):
                        return answer
                    empties += 1
                    if empties == self.max_retries + 1:
                        return answer
                    if attempt < self.max_retries:
                        self._count("retries")
                        continue
                    self._count_failure("empty answer")
                    return f"empty answer (after {attempt + 1} attempts, {empties} empty)"
                reason = "malformed response"
            except openai.RateLimitError as exc:
                reason, retry_after = "HTTP 429", _retry_after(exc)
            except openai.InternalServerError as exc:
                reason, retry_after = f"HTTP {exc.status_code}", _retry_after(exc)
            except openai.APITimeoutError:
                reason = "timeout"
            except openai.APIConnectionError:
                reason = "connection error"
            except openai.APIStatusError as exc:  # 4xx: the request itself is wrong; no retry
                message = self._scrub(_message(exc))
                if self._logger is not None:  # the server's words, for the log (scrubbed)
                    self._logger.warning(f"{self.role}: HTTP {exc.status_code} from the engine: {message}")
                return self._request_refused(exc.status_code, message)
            except (openai.APIResponseValidationError, ValueError, TypeError):
                reason = "malformed response"
            if attempt == self.max_retries:
                self._count_failure(reason)
                return f"{reason} (after {attempt + 1} attempts)"
            self._count("retries")
            if reason == "timeout":  # the endpoint's stall, or this machine too busy to read it
                self._count("timeout_retries")
            await asyncio.sleep(self._backoff(attempt, retry_after))
        return "no attempt made"

    async def _read_vllm_fields(self) -> str:
        """Which request fields this vLLM server honours, from its ``/version``. A server that
        does not say is taken as current (``structured_outputs``)."""
        import httpx
        from packaging.version import InvalidVersion, Version

        root = self.base_url.rstrip("/").removesuffix("/v1")
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                version = (await client.get(f"{root}/version")).json().get("version", "")
            return "structured_outputs" if Version(version) >= Version(STRUCTURED_OUTPUTS_SINCE) else "guided"
        except (httpx.HTTPError, ValueError, AttributeError, InvalidVersion):
            return "structured_outputs"

    def _scrub(self, text: str) -> str:
        """A server may echo the caller's key in an error body: never let it reach a row or log."""
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if len(key) >= 4:
            text = text.replace(key, "***")
        return scrub(text)

    def _slot(self):
        return self._limiter.slot() if self._limiter else contextlib.nullcontext()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = random.uniform(0, min(self.retry_cap_s, self.retry_base_s * 2**attempt))  # full jitter
        return max(delay, retry_after or 0.0)

    def _count(self, name: str, amount: int = 1) -> None:
        self._call_stats[name] = self._call_stats.get(name, 0) + amount

    def _count_failure(self, reason: str) -> None:
        self._count("failed_calls")
        reasons = self._call_stats.setdefault("failure_reasons", {})
        reasons[reason] = reasons.get(reason, 0) + 1

    def drain_call_stats(self) -> dict[str, Any]:
        stats, self._call_stats = self._call_stats, {}
        if self._batch_ids:
            stats["batch_ids"], self._batch_ids = self._batch_ids, []
        return stats

    def _warn(self, message: str) -> None:
        """A line for the run's log (distilabel's), scrubbed."""
        if self._logger is not None:
            self._logger.warning(f"{self.role}: {self._scrub(message)}")

    def _headers(self) -> dict[str, str]:
        return {ROLE_HEADER: self.role}

    # -- spend ---------------------------------------------------------------------------------

    def _record_spend(self, input_tokens: int, output_tokens: int) -> None:
        """Add one answer's cost to this process's spend file (the cap reads every process's)."""
        if not self.price or not self.spend_dir:
            return
        cost = usd(self.price, input_tokens, output_tokens)
        _PROCESS_SPEND[self.role] = _PROCESS_SPEND.get(self.role, 0.0) + cost
        folder = Path(self.spend_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{SPEND_FILE_PREFIX}.{self.role}.{os.getpid()}.json"
        partial = path.with_name(path.name + ".partial")
        partial.write_text(
            json.dumps({"role": self.role, "usd": _PROCESS_SPEND[self.role]}), encoding="utf-8"
        )
        partial.replace(path)

    def _spend_cap_reached(self) -> str | None:
        """Why no more requests may be sent (the run's spend reached ``max_spend_usd``), or None.
        Read at most every half second; requests already in flight still finish."""
        if not self.max_spend_usd or not self.spend_dir:
            return None
        read_at, total = self._spend_seen
        if time.monotonic() - read_at > SPEND_READ_EVERY_S:
            total = run_spend(self.spend_dir)
            self._spend_seen = (time.monotonic(), total)
        if total >= self.max_spend_usd:
            return f"spend cap reached (${total:.2f} of ${self.max_spend_usd:g})"
        return None

    # -- batch API helpers (tapir.serving.batch_api) -----------------------------------------------------

    def _parse_completion(self, body: Any) -> tuple[list[str], int, int, list[Any]] | str:
        """A chat completion body as the online path reads it, or why it is not one."""
        from openai.types.chat import ChatCompletion

        try:
            completion = ChatCompletion.model_validate(body)
        except (ValueError, TypeError):
            return "malformed response"
        if not completion.choices:
            return "malformed response"
        answer = _answer(completion)
        self._record_spend(answer[1], answer[2])
        return answer

    def _batch_outcome(self, entry: dict[str, Any]) -> tuple[str, Any]:
        """One line of a batch's output or error file: ("ok", body), ("retry", why) or ("final", why)."""
        response = entry.get("response") or {}
        status = response.get("status_code")
        if status == 200:
            return "ok", response.get("body")
        error = entry.get("error") or {}
        if not status:
            return "retry", f"batch: {error.get('code') or 'request failed'}"
        if status == 429 or status >= 500:
            return "retry", f"HTTP {status}"
        return "final", self._request_refused(status, self._scrub(_body_message(response.get("body") or {})))

    def _request_refused(self, status: int, message: str) -> str:
        """Why a request the server refused (4xx) fails for good, counted: a prompt too long is
        final, not failed (the same prompt will never fit; the row is excluded with this reason and
        the run is complete without it); anything else is a failed call."""
        if status in (400, 413, 422) and _TOO_LONG.search(message):
            self._count("rejected_prompts")
            return f"prompt too long (HTTP {status})"
        self._count_failure(f"HTTP {status}")
        return f"HTTP {status}: {message}"

    async def _batch_call(self, what: str, call: Any) -> Any:
        """One call of the files/batches endpoints, retried like a request (connection errors,
        time-outs, 429, 5xx); a 4xx other than 404 ends the round with one line."""
        import openai

        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                return await call()
            except openai.NotFoundError:
                raise
            except (openai.RateLimitError, openai.InternalServerError) as exc:
                retry_after = _retry_after(exc)
                reason = f"HTTP {exc.status_code}"
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                reason = type(exc).__name__
            except openai.APIStatusError as exc:
                message = f"{what}: HTTP {exc.status_code}: {self._scrub(_message(exc))}"
                raise BatchRefused(exc.status_code, message) from None
            if attempt == self.max_retries:
                raise RuntimeError(f"{what}: {reason} (after {attempt + 1} attempts)")
            await asyncio.sleep(self._backoff(attempt, retry_after))
        raise RuntimeError(f"{what}: no attempt made")


class BatchRefused(RuntimeError):
    """The Batch API's files/batches endpoint refused a call with a 4xx: the request is wrong,
    and asking it again on a rerun would be refused the same way."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def _token_logprobs(choice: Any) -> list[dict[str, Any]] | None:
    """OpenAI's ``logprobs.content`` kept small: per token its text and ``[text, logprob]`` alternatives."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [
        {
            "token": entry.token,
            "top": [[alt.token, alt.logprob] for alt in (entry.top_logprobs or [])]
            or [[entry.token, entry.logprob]],
        }
        for entry in content
    ]


def _answer(completion: Any) -> tuple[list[str], int, int, list[Any]]:
    """A chat completion's answer texts, token counts and token log-probabilities."""
    usage = completion.usage
    return (
        [choice.message.content or "" for choice in completion.choices],
        usage.prompt_tokens if usage else 0,
        usage.completion_tokens if usage else 0,
        [_token_logprobs(choice) for choice in completion.choices],
    )


def _message(exc: Any) -> str:
    """The server's own words, short: what the user needs to see (e.g. "exceeds context")."""
    return _body_message(getattr(exc, "body", None), str(getattr(exc, "message", exc)))


def _body_message(body: Any, fallback: str | None = None) -> str:
    """An error body's message (OpenAI's ``{"error": {"message": ...}}`` and its variants); a
    body that is not a mapping is itself the message unless ``fallback`` says otherwise."""
    if isinstance(body, dict):
        detail = body.get("message") or body.get("detail") or body.get("error") or body
        if isinstance(detail, dict):
            detail = detail.get("message") or detail
        return str(detail)[:300]
    return (str(body) if fallback is None else fallback)[:300]


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def run_spend(folder: str | Path) -> float:
    """What the run has spent so far, in $: every process's spend file in ``folder``."""
    total = 0.0
    for path in Path(folder).glob(f"{SPEND_FILE_PREFIX}.*.json"):
        try:
            total += float(json.loads(path.read_text(encoding="utf-8"))["usd"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return total
