"""OpenAI's Batch API for a role with ``batch: true``: the step's requests as one API batch.

Each call of a step's LLM (one distilabel batch of rows) becomes one JSONL file uploaded to
``/v1/files`` and one ``/v1/batches`` job; the client polls it and maps the output file's lines
back to the requests by ``custom_id`` (a hash of the request, so the same request always has the
same id). Requests the batch failed, expired or answered with 429/5xx are counted and asked
again in a new batch, up to the role's ``max_retries``, as online requests are; a 4xx is final.

**No double spend.** Every batch is written to a ledger (``<cache_dir>/batches/``) the moment it
exists — and the submission before it is sent, with an id that travels in the batch's
``metadata`` — so a run killed while it polls finds its batches again on the next run (from the
ledger, or from ``GET /v1/batches`` when the kill came between the create and the ledger line)
and polls them instead of submitting the same requests twice. The ledger lives beside the
response cache, not in the run's output staging folder, because the next run removes a killed
run's staging folder before it starts.

Why not distilabel's own offline batch generation (``use_offline_batch_generation``): it keeps
the job ids only in the step's state when it raises "not finished" (a ``kill -9`` during its
blocking poll loses them), it bypasses the client's response cache, retries and usage counts,
and distilabel's Ray runner refuses it. tapir's client works the same under both runners.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tapir.serving.engine_client import TapirEngineClient

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
TERMINAL = ("completed", "failed", "expired", "cancelled")
#: OpenAI's limit on requests per batch file.
MAX_REQUESTS_PER_BATCH = 50_000
SUBMISSION_KEY = "tapir_submission"
ROLE_KEY = "tapir_role"
LEDGER_FOLDER = "batches"


def custom_id(role: str, line_body: dict[str, Any]) -> str:
    """The request's id in a batch: the same request always gets the same one."""
    payload = json.dumps([role, line_body], sort_keys=True, default=str)
    return "tapir-" + hashlib.sha256(payload.encode()).hexdigest()[:40]


class BatchLedger:
    """Append-only JSON lines, one file per role and process: which requests went in which batch.

    ``submitting`` lines come before the create call (submission id, custom ids), ``created``
    lines right after it (batch id). A line is one ``write`` on an ``O_APPEND`` descriptor,
    fsync'ed; a line cut by a kill is skipped when read.
    """

    def __init__(self, folder: str | Path, role: str, base_url: str) -> None:
        self.folder = Path(folder)
        self.role, self.base_url = role, base_url.rstrip("/")

    def append(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {**record, "role": self.role, "base_url": self.base_url, "time": round(time.time(), 3)}
        )
        fd = os.open(
            self.folder / f"{self.role}.{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.folder.glob(f"{self.role}.*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # cut by a kill mid-write
                if record.get("base_url") == self.base_url:
                    found.append(record)
        return sorted(found, key=lambda r: r.get("time", 0))


class BatchRound:
    """The requests of one ``generate`` call, sent as API batches (see the module docstring).

    Every ``ask`` registers one request; when all ``expected`` requests are in, the round runs
    and each ``ask`` returns what the online path would: the answer tuple or why it failed.
    """

    def __init__(self, client: TapirEngineClient, expected: int, ledger: BatchLedger) -> None:
        self.client, self.expected, self.ledger = client, expected, ledger
        self.lines: dict[str, dict[str, Any]] = {}
        self.waiting: dict[str, list[asyncio.Future[Any]]] = {}
        self.registered = 0
        self._task: asyncio.Task[None] | None = None

    async def ask(self, messages: Any, body: dict[str, Any]) -> Any:
        line_body = {k: v for k, v in body.items() if k != "extra_body"}
        line_body.update(body.get("extra_body") or {})
        line_body["messages"] = messages
        cid = custom_id(self.client.role, line_body)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.lines[cid] = line_body
        self.waiting.setdefault(cid, []).append(future)
        self.registered += 1
        if self.registered >= self.expected and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run_safely())
        return await future

    async def _run_safely(self) -> None:
        try:
            await self._run()
        except BaseException as error:  # every ask must end: a broken round fails its requests
            reason = f"batch API: {type(error).__name__}: {error}"
            for cid in list(self.waiting):
                self.client._count_failure("batch API error")
                self._resolve(cid, self.client._scrub(reason)[:300])
            if not isinstance(error, Exception):
                raise

    def _resolve(self, cid: str, result: Any) -> None:
        for future in self.waiting.pop(cid, []):
            if not future.done():
                future.set_result(result)

    async def _run(self) -> None:
        client = self.client
        tries = dict.fromkeys(self.lines, 0)
        empties = dict.fromkeys(self.lines, 0)
        todo = set(self.lines)
        first = True
        while todo:
            outcomes = await self._one_pass(todo, resume=first)
            first = False
            again: set[str] = set()
            for cid in sorted(todo):
                kind, value = outcomes.get(cid, ("retry", "missing from the batch's output"))
                if kind == "ok":
                    answer = client._parse_completion(value)
                    if isinstance(answer, str):
                        kind, value = "retry", answer
                    elif all(t.strip() for t in answer[0]) or empties[cid] >= client.max_retries:
                        self._resolve(cid, answer)
                        continue
                    else:  # empty: asked again, kept only when every attempt was empty
                        empties[cid] += 1
                        client._count("retries")
                        again.add(cid)
                        continue
                if kind == "final":
                    self._resolve(cid, value)
                    continue
                tries[cid] += 1
                if tries[cid] > client.max_retries:
                    client._count_failure(value)
                    self._resolve(cid, f"{value} (after {tries[cid]} batches)")
                else:
                    client._count("retries")
                    again.add(cid)
            todo = again

    async def _one_pass(self, todo: set[str], resume: bool) -> dict[str, tuple[str, Any]]:
        """Each request's outcome: ("ok", completion body), ("retry", why) or ("final", why)."""
        batches: dict[str, list[str]] = {}
        if resume:
            batches = await self._known_batches(todo)
        known = {cid for cids in batches.values() for cid in cids}
        fresh = sorted(todo - known)
        if fresh and (capped := self.client._spend_cap_reached()):
            outcomes = {cid: ("final", capped) for cid in fresh}
            for _ in fresh:
                self.client._count_failure("spend cap reached")
        else:
            outcomes = {}
            for start in range(0, len(fresh), MAX_REQUESTS_PER_BATCH):
                chunk = fresh[start : start + MAX_REQUESTS_PER_BATCH]
                batch_id = await self._submit(chunk)
                batches[batch_id] = chunk
        results = await asyncio.gather(*(self._collect(bid, cids) for bid, cids in batches.items()))
        for found in results:
            outcomes.update(found)
        return outcomes

    async def _known_batches(self, todo: set[str]) -> dict[str, list[str]]:
        """Batches an earlier (killed) run submitted for any of ``todo``: the newest per request."""
        records = self.ledger.records()
        created = {r["submission"]: r for r in records if r.get("event") == "created"}
        orphans = [r for r in records if r.get("event") == "submitting" and r["submission"] not in created]
        if orphans and any(set(r["custom_ids"]) & todo for r in orphans):
            for batch in await self._server_batches():
                sid = (batch.metadata or {}).get(SUBMISSION_KEY)
                orphan = next((r for r in orphans if r["submission"] == sid), None)
                if orphan is not None:
                    record = {"event": "created", "submission": sid, "batch_id": batch.id}
                    self.ledger.append({**record, "custom_ids": orphan["custom_ids"], "adopted": True})
                    created[sid] = {**record, "custom_ids": orphan["custom_ids"]}
        newest: dict[str, str] = {}
        for record in sorted(created.values(), key=lambda r: r.get("time", 0)):
            for cid in record["custom_ids"]:
                if cid in todo:
                    newest[cid] = record["batch_id"]
        batches: dict[str, list[str]] = {}
        for cid, batch_id in newest.items():
            batches.setdefault(batch_id, []).append(cid)
        if batches:
            self.client._count("batches_resumed", len(batches))
        return batches

    async def _server_batches(self) -> list[Any]:
        """The endpoint's recent batches (the ones a kill may have left unrecorded)."""
        aclient = self.client._aclient
        page = await self.client._batch_call("list batches", lambda: aclient.batches.list(limit=100))
        return list(getattr(page, "data", []) or [])

    async def _submit(self, cids: list[str]) -> str:
        client = self.client
        aclient = client._aclient
        submission = uuid.uuid4().hex
        content = "".join(
            json.dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": self.lines[cid]}) + "\n"
            for cid in cids
        ).encode()
        headers = client._headers()
        uploaded = await client._batch_call(
            "upload the batch file",
            lambda: aclient.files.create(
                file=(f"{submission}.jsonl", content, "application/jsonl"),
                purpose="batch",
                extra_headers=headers,
            ),
        )
        self.ledger.append(
            {"event": "submitting", "submission": submission, "file_id": uploaded.id, "custom_ids": cids}
        )
        batch = await client._batch_call(
            "create the batch",
            lambda: aclient.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window=COMPLETION_WINDOW,
                metadata={SUBMISSION_KEY: submission, ROLE_KEY: client.role},
                extra_headers=headers,
            ),
        )
        self.ledger.append(
            {"event": "created", "submission": submission, "batch_id": batch.id, "custom_ids": cids}
        )
        client._count("batches")
        client._count("requests", len(cids))
        client._batch_ids.append(batch.id)
        return batch.id

    async def _collect(self, batch_id: str, cids: list[str]) -> dict[str, tuple[str, Any]]:
        """Poll ``batch_id`` until it ends; each of its requests' outcome."""
        import openai

        client = self.client
        aclient = client._aclient
        while True:
            try:
                batch = await client._batch_call("poll the batch", lambda: aclient.batches.retrieve(batch_id))
            except openai.NotFoundError:  # not this endpoint's (or purged): asked again
                return {cid: ("retry", f"batch {batch_id} not found") for cid in cids}
            if batch.status in TERMINAL:
                break
            await asyncio.sleep(client.batch_poll_s)
        outcomes: dict[str, tuple[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            response = await client._batch_call(
                "download the batch's results", lambda file_id=file_id: aclient.files.content(file_id)
            )
            for line in response.text.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("custom_id") in cids:
                    outcomes[entry["custom_id"]] = client._batch_outcome(entry)
        for cid in cids:
            outcomes.setdefault(cid, ("retry", f"batch {batch.status}"))
        return outcomes
