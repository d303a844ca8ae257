"""A loopback OpenAI-compatible server that answers tapir's prompts by script, with faults.

Tests and benchmarks need an endpoint that behaves like the real ones — latency, 429 with
``Retry-After``, 5xx, time-outs, truncated or garbage bodies, dropped connections — and does
so *deterministically*: whether a request fails depends only on the seed, the request's body
and how many times that same body was asked before, so a rerun sees the same faults and a
retry can succeed. It speaks just enough HTTP/1.1 (keep-alive, Content-Length) over asyncio
streams to control every byte it sends, which no web framework lets a test do (a dropped
connection or a body shorter than its Content-Length).

Answers are scripted from the prompt (``scripted_answer``): the judge grades teacher answers
higher than student answers, the classifier picks a label named in the request, and trigger
words produce malformed or empty answers, so the pipeline's parsing and counting can be
checked without a model. The ``X-Tapir-Role`` header (sent by tapir's client) says whose
answer is asked for.

Run it: ``python -m tapir.serving.simulator --port 0 --latency-ms 500 --rate-5xx 0.1`` prints its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

MALFORMED = "MALFORMED"  # instructions containing it get unparseable judge/classifier answers
EMPTY = "EMPTYANSWER"  # instructions containing it get an empty teacher response
HANG_MARKER = "HANGFOREVER"  # a prompt containing it never gets an answer (a time-out)
ROLE_HEADER = "x-tapir-role"
PREFLIGHT_ROLE = "preflight"  # tapir's one-token check before a run: never faulted, counted apart
READY_LINE = "tapir-simulator listening on"

FAULTS = ("429", "5xx", "timeout", "truncated", "garbage", "empty", "drop")
#: Request fields that carry a constraint (llama.cpp, vLLM old and new): counted per request.
CONSTRAINT_FIELDS = ("grammar", "structured_outputs", "guided_choice", "guided_regex")


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def scripted_answer(role: str, model: str, prompt: str) -> str:
    """The canned answer to one of tapir's prompts (see the module docstring)."""
    h = _digest(f"scripted-{role}-{model}|{prompt}")
    if "Rating: [[" in prompt:  # judge
        if MALFORMED in prompt:
            return "The answer is fine, I suppose."
        is_teacher = "[teacher]" in prompt
        score = 7 + h % 4 if is_teacher else 2 + h % 8
        return f"The answer is adequate. Rating: [[{score}]]"
    if "Best Model Identifier" in prompt:  # AlpacaEval pairwise judge
        if MALFORMED in prompt:
            return "Both outputs have merits."
        return "m" if h % 2 else "M"
    if "Categories:" in prompt:  # classifier
        if MALFORMED in prompt:
            return "I am not sure what this is."
        found = re.search(r"Categories:\s*(.+)", prompt)
        labels = [label.strip() for label in found.group(1).split(",")] if found else []
        request = prompt.split("Request:", 1)[-1].lower()
        for label in sorted(labels, key=len, reverse=True):
            if label.lower() in request:
                return label
        return labels[h % len(labels)] if labels else "Others"
    if "Write one new instruction" in prompt:  # expansion
        return f"Describe a new problem number {h % 1000} in the same style and explain it."
    if "Original answer:" in prompt:  # refinement
        return f"An improved, well structured answer (v{h % 97})."
    if EMPTY in prompt and role == "teacher":
        return ""
    return f"[{role}] answer {h % 10_000} to the request."


def scripted_logprobs(text: str) -> list[dict[str, Any]]:
    """OpenAI-style ``logprobs.content`` for a scripted answer: a judge's rating token puts 0.6 on
    the written grade and 0.15 on each neighbour (so its expected score is near, not at, the
    written one); any other text is one certain token."""
    found = re.search(r"\[\[(\d+)\]\]", text)

    def entry(token: str, top: list[tuple[str, float]]) -> dict[str, Any]:
        alternatives = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
        return {
            "token": token,
            "logprob": top[0][1],
            "bytes": list(token.encode()),
            "top_logprobs": alternatives,
        }

    if not found:
        return [entry(text, [(text, 0.0)])]
    grade = int(found.group(1))
    around = [(str(grade), 0.6)] + [(str(g), 0.15) for g in (grade - 1, grade + 1) if 1 <= g <= 10]
    around.append(("The", 1 - sum(p for _, p in around)))
    return [
        entry(text[: found.start(1)], [(text[: found.start(1)], 0.0)]),
        entry(str(grade), [(t, math.log(p)) for t, p in around]),
        entry(text[found.end(1) :], [(text[found.end(1) :], 0.0)]),
    ]


@dataclass
class SimulatorSettings:
    """Latency and fault rates (each a probability per request; they add up to at most 1)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 0.2
    rate_5xx: float = 0.0
    rate_timeout: float = 0.0
    hang_s: float = 3600.0  # a "timeout" holds the request this long (longer than any client waits)
    rate_truncated: float = 0.0
    rate_garbage: float = 0.0
    rate_empty: float = 0.0
    rate_drop: float = 0.0
    seed: int = 0
    models: tuple[str, ...] = ()  # served model names; empty: any name is served
    api_key: str = ""  # when set, requests must carry it (Authorization: Bearer)
    echo_key_in_errors: bool = False  # a hostile server: error bodies repeat the caller's key
    max_prompt_chars: float = 0  # longer prompts get vLLM's HTTP 400 "maximum context length" (0: any)
    fault_preflight: bool = False  # fault tapir's pre-flight checks (the model list too) like any request
    no_logprobs: bool = False  # a server that ignores `logprobs` (answers carry none)
    reject_after: float = 0  # after this many chat requests, every one gets 401 (a key revoked mid-run)
    vllm_version: str = ""  # answer GET /version as a vLLM server of this version ("": no such route)
    batch_delay_s: float = 0.5  # a batch is done this long after it was created (Batch API)
    batch_fail_rate: float = 0.0  # share of a batch's requests answered with an HTTP 500 line
    batch_expire_every: float = 0  # every n-th batch expires with only its first half answered (0: none)
    batch_output_gone_first: int = 0  # the first n batches' result files are gone (404) when fetched
    batch_unknown_status_first: int = 0  # the first n batches never leave a status tapir does not know
    batch_duplicate_lines: bool = False  # each answered line is repeated, with another answer
    batch_refuse_files: int = 0  # answer every batch file upload with this 4xx status (0: never)

    def fault_for(self, body_key: str, attempt: int) -> str | None:
        """Deterministic by seed, request body and attempt number."""
        u = random.Random(f"{self.seed}|{body_key}|{attempt}").random()
        edge = 0.0
        for name in FAULTS:
            edge += getattr(self, f"rate_{name}")
            if u < edge:
                return name
        return None


@dataclass
class Counters:
    requests: int = 0
    answered: int = 0
    answered_again: int = 0  # answers to a body that was answered before (a client asked twice)
    preflight: int = 0  # tapir's pre-run checks (not in requests: they are not the run's traffic)
    in_flight: int = 0
    max_in_flight: int = 0
    hanging: int = 0
    constraint_fields: dict[str, int] = field(default_factory=dict)  # how constraints arrived
    files_uploaded: int = 0
    batches_created: int = 0
    batch_requests: int = 0  # request lines in created batches
    batch_requests_again: int = 0  # lines a batch carried although an earlier batch answered them
    faults: dict[str, int] | None = None

    def __post_init__(self) -> None:
        self.faults = dict.fromkeys(FAULTS, 0)


class Simulator:
    """The server. ``await start()`` binds 127.0.0.1 (port 0: a free one); ``url`` is its /v1."""

    def __init__(self, settings: SimulatorSettings, host: str = "127.0.0.1", port: int = 0) -> None:
        self.settings = settings
        self.host, self.port = host, port
        self.counters = Counters()
        self._attempts: dict[str, int] = {}
        self._answered: set[str] = set()
        self._server: asyncio.base_events.Server | None = None
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._gone_files: set[str] = set()
        self._sent_at: dict[str, list[float]] = {}  # when each body's answers were sent (wall clock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                keep_open = await self._answer(request, writer)
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        method, path, headers, body = request["method"], request["path"], request["headers"], request["body"]
        path = path.split("?", 1)[0].rstrip("/")
        if self.settings.api_key and headers.get("authorization") != f"Bearer {self.settings.api_key}":
            await _send(writer, 401, self._error(headers, "invalid key"))
            return True
        if method == "GET" and path in ("/health", "/v1/health"):
            await _send(writer, 200, {"status": "ok"})
            return True
        if method == "GET" and path == "/v1/models":
            if self.settings.fault_preflight:
                self.counters.preflight += 1
                faulted = await self._fault(b"", headers, writer)
                if faulted is not None:
                    return faulted
            names = list(self.settings.models) or ["any"]
            await _send(
                writer, 200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]}
            )
            return True
        if method == "GET" and path == "/version" and self.settings.vllm_version:
            await _send(writer, 200, {"version": self.settings.vllm_version})
            return True
        if method == "GET" and path == "/stats":
            await _send(writer, 200, asdict(self.counters))
            return True
        if method == "GET" and path == "/answered-twice":  # when each twice-answered body was sent
            await _send(writer, 200, {k: t for k, t in self._sent_at.items() if len(t) > 1})
            return True
        if path.startswith(("/v1/files", "/v1/batches")):
            status, payload = self._batch_api(method, path, headers, body)
            if isinstance(payload, bytes):
                await _send_raw(writer, status, payload, "application/octet-stream")
            else:
                await _send(writer, status, payload)
            return True
        if method != "POST" or path != "/v1/chat/completions":
            await _send(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return True
        counters = self.counters
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        try:
            return await self._chat(headers, body, writer)
        finally:
            counters.in_flight -= 1

    async def _fault(self, body: bytes, headers: dict[str, str], writer: asyncio.StreamWriter) -> bool | None:
        """Maybe answer a pre-flight request with a fault, as often as any request gets one:
        None when it did not; else whether the connection stays open."""
        key = hashlib.sha256(b"preflight|" + body).hexdigest()
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        fault = self.settings.fault_for(key, attempt)
        if fault is None:
            return None
        self.counters.faults[fault] += 1  # type: ignore[index]
        if fault == "429":
            await _send(writer, 429, self._error(headers, "rate limited"), {"Retry-After": "0.05"})
        elif fault == "5xx":
            await _send(writer, 503, self._error(headers, "server overloaded"))
        elif fault == "timeout":
            await asyncio.sleep(self.settings.hang_s)
            return False
        elif fault == "drop":
            return False
        elif fault == "garbage":
            await _send_raw(writer, 200, b"<html>upstream proxy error</html>", "text/html")
        elif fault == "truncated":
            await _send_raw(writer, 200, b'{"object": "chat.compl', "application/json", length=64)
            return False
        else:  # empty: an answer with nothing in it
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": ""}}
            if _asks_logprobs(body):
                choice["logprobs"] = {"content": scripted_logprobs("")}
            payload = {"object": "chat.completion", "choices": [choice], "usage": None}
            if not body:  # the model list: an empty list
                payload = {"object": "list", "data": []}
            await _send(writer, 200, payload)
        return True

    # -- the Batch API: /v1/files and /v1/batches ----------------------------------------------

    def _batch_api(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        parts = path.split("/")[2:]  # files | files/<id>/content | batches | batches/<id>
        if method == "POST" and parts == ["files"]:
            if self.settings.batch_refuse_files:
                return self.settings.batch_refuse_files, self._error(headers, "the file is too large")
            content = _multipart_file(headers.get("content-type", ""), body)
            if content is None:
                return 400, self._error(headers, "expected a multipart upload with a file")
            file_id = f"file-{len(self._files) + 1:06d}"
            self._files[file_id] = content
            self.counters.files_uploaded += 1
            return 200, _file_object(file_id, len(content))
        if method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            if parts[1] not in self._files or parts[1] in self._gone_files:
                return 404, self._error(headers, f"No such File object: {parts[1]}")
            return 200, self._files[parts[1]]
        if method == "POST" and parts == ["batches"]:
            try:
                request = json.loads(body)
                lines = [
                    json.loads(line) for line in self._files[request["input_file_id"]].splitlines() if line
                ]
            except (ValueError, KeyError, TypeError):
                return 400, self._error(headers, "input_file_id does not name an uploaded JSONL file")
            return 200, self._create_batch(request, lines, headers)
        if method == "GET" and parts == ["batches"]:
            data = [self._batch_object(b) for b in reversed(self._batches.values())]
            return 200, {"object": "list", "data": data, "has_more": False}
        if method == "GET" and len(parts) == 2 and parts[0] == "batches":
            batch = self._batches.get(parts[1])
            if batch is None:
                return 404, self._error(headers, f"No such Batch object: {parts[1]}")
            return 200, self._batch_object(batch)
        return 404, {"error": {"message": f"no route {method} {path}"}}

    def _create_batch(
        self, request: dict[str, Any], lines: list[dict[str, Any]], headers: dict[str, str]
    ) -> dict[str, Any]:
        counters = self.counters
        counters.batches_created += 1
        counters.batch_requests += len(lines)
        metadata = request.get("metadata") or {}
        role = metadata.get("tapir_role") or headers.get(ROLE_HEADER, "assistant")
        for line in lines:
            if f"batch|{role}|{line['custom_id']}" in self._answered:
                counters.batch_requests_again += 1
        batch_id = f"batch_{counters.batches_created:06d}"
        every = int(self.settings.batch_expire_every)
        self._batches[batch_id] = {
            "id": batch_id,
            "input_file_id": request["input_file_id"],
            "metadata": metadata,
            "created_at": time.time(),
            "role": role,
            "lines": lines,
            "expires": bool(every) and counters.batches_created % every == 0,
            "status": "in_progress",
        }
        return self._batch_object(self._batches[batch_id])

    def _batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        number = int(batch["id"].removeprefix("batch_"))
        if number <= self.settings.batch_unknown_status_first:
            batch["status"] = "rehydrating"  # a status no client knows
        elif (
            batch["status"] == "in_progress"
            and time.time() - batch["created_at"] >= self.settings.batch_delay_s
        ):
            self._finish_batch(batch)
            if number <= self.settings.batch_output_gone_first:
                self._gone_files.update(
                    f for f in (batch.get("output_file_id"), batch.get("error_file_id")) if f
                )
        total = len(batch["lines"])
        return {
            "id": batch["id"],
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": batch["input_file_id"],
            "completion_window": "24h",
            "status": batch["status"],
            "output_file_id": batch.get("output_file_id"),
            "error_file_id": batch.get("error_file_id"),
            "created_at": int(batch["created_at"]),
            "request_counts": {
                "total": total,
                "completed": batch.get("completed", 0),
                "failed": batch.get("failed", 0),
            },
            "metadata": batch["metadata"],
        }

    def _finish_batch(self, batch: dict[str, Any]) -> None:
        """Answer a batch's lines (some fail or expire, deterministically) into its files."""
        output, errors = [], []
        answered_until = len(batch["lines"]) // 2 if batch["expires"] else len(batch["lines"])
        for number, line in enumerate(batch["lines"]):
            cid = line["custom_id"]
            key = f"batch|{batch['role']}|{cid}"
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            if number >= answered_until:
                errors.append(
                    {
                        "custom_id": cid,
                        "response": None,
                        "error": {"code": "batch_expired", "message": "expired"},
                    }
                )
                continue
            u = random.Random(f"{self.settings.seed}|{key}|{attempt}").random()
            if u < self.settings.batch_fail_rate:
                body = {"error": {"message": "server overloaded", "type": "server_error"}}
                errors.append(
                    {"custom_id": cid, "response": {"status_code": 500, "body": body}, "error": None}
                )
                continue
            answer = completion(batch["role"], line["body"], f"{cid[-12:]}-{attempt}", False, self.settings)
            output.append({"custom_id": cid, "response": {"status_code": 200, "body": answer}, "error": None})
            if self.settings.batch_duplicate_lines:  # the same id again, answered otherwise
                other = completion(batch["role"], line["body"], f"{cid[-12:]}-dup", False, self.settings)
                other["choices"][0]["message"]["content"] = "a second, different answer"
                output.append(
                    {"custom_id": cid, "response": {"status_code": 200, "body": other}, "error": None}
                )
            self._count_answer(key)
        for name, entries in (("output_file_id", output), ("error_file_id", errors)):
            if entries:
                file_id = f"file-{len(self._files) + 1:06d}"
                self._files[file_id] = "".join(json.dumps(e) + "\n" for e in entries).encode()
                batch[name] = file_id
        batch["completed"], batch["failed"] = len(output), len(errors)
        batch["status"] = "expired" if batch["expires"] else "completed"

    def _count_answer(self, key: str) -> None:
        """One answer sent, online or in a batch; a key answered before counts as asked twice."""
        self._sent_at.setdefault(key, []).append(time.time())
        self.counters.answered += 1
        if key in self._answered:
            self.counters.answered_again += 1
        self._answered.add(key)

    def _error(self, headers: dict[str, str], message: str) -> dict[str, Any]:
        """An OpenAI-style error body; a hostile server repeats the caller's credentials in it."""
        if self.settings.echo_key_in_errors:
            message += f" (request carried {headers.get('authorization', '')})"
        return {"error": {"message": message, "type": "invalid_request_error"}}

    async def _chat(self, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        settings = self.settings
        if headers.get(ROLE_HEADER) == PREFLIGHT_ROLE:
            self.counters.preflight += 1
            faulted = await self._fault(body, headers, writer) if settings.fault_preflight else None
            if faulted is not None:
                return faulted
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": "ok"}}
            if _asks_logprobs(body) and not settings.no_logprobs:
                choice["logprobs"] = {"content": scripted_logprobs("ok")}
            await _send(writer, 200, {"object": "chat.completion", "choices": [choice], "usage": None})
            return True
        if settings.reject_after and self.counters.requests >= settings.reject_after:
            self.counters.requests += 1
            await _send(writer, 401, self._error(headers, "invalid key (revoked)"))
            return True
        self.counters.requests += 1
        try:
            payload = json.loads(body)
            messages = payload["messages"]
            model = str(payload["model"])
        except (ValueError, KeyError, TypeError):
            await _send(writer, 400, self._error(headers, "body is not a chat completion request"))
            return True
        for name in CONSTRAINT_FIELDS:
            if name in payload:
                self.counters.constraint_fields[name] = self.counters.constraint_fields.get(name, 0) + 1
        if settings.models and model not in settings.models:
            await _send(writer, 404, self._error(headers, f"The model `{model}` does not exist."))
            return True
        # Whose request it is belongs to its identity: teacher and student may send one body.
        key = hashlib.sha256(headers.get(ROLE_HEADER, "").encode() + b"|" + body).hexdigest()
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        delay = settings.latency_ms + (random.random() * settings.jitter_ms if settings.jitter_ms else 0)
        if delay:
            await asyncio.sleep(delay / 1000)
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        if settings.max_prompt_chars and len(prompt) > settings.max_prompt_chars:
            message = (
                f"This model's maximum context length is {int(settings.max_prompt_chars) // 4} tokens. "
                f"However, you requested {len(prompt) // 4} tokens in the messages."
            )
            await _send(writer, 400, self._error(headers, message))
            return True
        fault = settings.fault_for(key, attempt)
        if HANG_MARKER in prompt:
            fault = "timeout"
        if fault:
            self.counters.faults[fault] += 1  # type: ignore[index]
        if fault == "429":
            await _send(
                writer,
                429,
                self._error(headers, "rate limited"),
                {"Retry-After": f"{settings.retry_after_s:g}"},
            )
            return True
        if fault == "5xx":
            await _send(writer, 503, self._error(headers, "server overloaded"))
            return True
        if fault == "timeout":
            # A hung request is not "in flight" (its client gives up and frees its slot, while
            # this coroutine sleeps on): counted apart, so in_flight checks a client's cap.
            self.counters.in_flight -= 1
            self.counters.hanging += 1
            try:
                await asyncio.sleep(settings.hang_s)
            finally:
                self.counters.in_flight += 1
                self.counters.hanging -= 1
            return False
        if fault == "drop":
            return False
        if fault == "garbage":
            await _send_raw(writer, 200, b"<html>upstream proxy error</html>", "text/html")
            return True
        role = headers.get(ROLE_HEADER, "assistant")
        answer = completion(role, payload, f"{key[:12]}-{attempt}", empty=fault == "empty", settings=settings)
        if fault == "truncated":
            data = json.dumps(answer).encode()
            await _send_raw(writer, 200, data[: len(data) // 2], "application/json", length=len(data))
            return False
        self._count_answer(key)
        await _send(writer, 200, answer)
        return True


def completion(
    role: str, payload: dict[str, Any], answer_id: str, empty: bool, settings: SimulatorSettings
) -> dict[str, Any]:
    """The chat completion the simulator answers ``payload`` with (online or in a batch)."""
    model = str(payload["model"])
    prompt = "\n".join(str(m.get("content") or "") for m in payload["messages"])
    text = "" if empty else scripted_answer(role, model, prompt)
    n = int(payload.get("n") or 1)
    answer: dict[str, Any] = {
        "id": f"chatcmpl-{answer_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text if i == 0 else f"{text} ({i})"},
                "finish_reason": "stop",
                "logprobs": None,
            }
            for i in range(n)
        ],
        "usage": {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(text.split()) * n,
            "total_tokens": len(prompt.split()) + len(text.split()) * n,
        },
    }
    if payload.get("logprobs") and not settings.no_logprobs:
        for choice in answer["choices"]:
            choice["logprobs"] = {"content": scripted_logprobs(choice["message"]["content"])}
    return answer


def _asks_logprobs(body: bytes) -> bool:
    try:
        return bool(json.loads(body).get("logprobs"))
    except (ValueError, AttributeError):
        return False


def _file_object(file_id: str, size: int) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": f"{file_id}.jsonl",
        "purpose": "batch",
        "status": "processed",
    }


def _multipart_file(content_type: str, body: bytes) -> bytes | None:
    """The ``file`` part of a multipart/form-data upload (what the OpenAI SDK sends)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True)
    return None


async def _read_request(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    line = await reader.readline()
    if not line:
        return None
    try:
        method, path, _ = line.decode("latin-1").split(" ", 2)
    except ValueError:
        return None
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    body = await reader.readexactly(length) if length else b""
    return {"method": method, "path": path, "headers": headers, "body": body}


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}


async def _send(
    writer: asyncio.StreamWriter, status: int, payload: Any, extra: dict[str, str] | None = None
) -> None:
    await _send_raw(writer, status, json.dumps(payload).encode(), "application/json", extra=extra)


async def _send_raw(
    writer: asyncio.StreamWriter,
    status: int,
    data: bytes,
    content_type: str,
    *,
    length: int | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    reason = _REASONS.get(status, "Service Unavailable" if status >= 500 else "Error")
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    head.append(f"Content-Length: {length if length is not None else len(data)}")
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
    await writer.drain()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tapir.serving.simulator", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    for spec in fields(SimulatorSettings):
        flag = "--" + spec.name.replace("_", "-")
        if spec.name == "models":
            parser.add_argument(flag, nargs="*", default=[], help="served model names (default: any)")
        elif spec.type in ("bool", bool):
            parser.add_argument(flag, action="store_true")
        else:
            kind = {"int": int, "str": str}.get(str(spec.type), float)
            parser.add_argument(flag, type=kind, default=spec.default)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = vars(_parser().parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    args["models"] = tuple(args["models"])
    settings = SimulatorSettings(**args)

    async def run() -> None:
        simulator = Simulator(settings, host, port)
        await simulator.start()
        print(f"{READY_LINE} {simulator.url}", flush=True)
        await simulator.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
