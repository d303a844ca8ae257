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
import contextlib
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
#: OpenAI's statuses of a batch still on its way; any other is unknown to tapir.
RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
#: Polls of a batch whose status tapir does not know before it is abandoned (cancelled, best
#: effort) and its requests go in a new batch: a status is never polled forever.
UNKNOWN_STATUS_POLLS = 10
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
        return self.read()[0]

    def read(self) -> tuple[list[dict[str, Any]], list[str]]:
        """This role's records at this endpoint, and ``file line N`` for every line that could
        not be read (cut by a kill mid-write, or damaged: a bad byte, not JSON, not a record),
        which is skipped -- one bad line never blocks the batches the others describe."""
        found, skipped = [], []
        for path in sorted(self.folder.glob(f"{self.role}.*.jsonl")):
            try:
                raw = path.read_bytes()
            except OSError as exc:
                skipped.append(f"{path} ({exc.strerror})")
                continue
            for number, line in enumerate(raw.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8"))
                    if not isinstance(record, dict) or not isinstance(record.get("custom_ids", []), list):
                        raise ValueError("not a ledger record")
                except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                    skipped.append(f"{path} line {number}")
                    continue
                if record.get("base_url") == self.base_url:
                    found.append(record)
        return sorted(found, key=lambda r: r.get("time", 0)), skipped


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
            refused = getattr(error, "status_code", None)
            # a 4xx of the files/batches endpoints is final (the request is wrong: a rerun asks the
            # same); anything else may pass on a rerun
            kind = self.client._scrub(f"batch API refused: {error}")[:200] if refused else "batch API error"
            for cid in list(self.waiting):
                self.client._count_failure(kind)
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
        records, skipped = self.ledger.read()
        if skipped:
            self.client._count("ledger_lines_skipped", len(skipped))
            self.client._warn(
                f"batch ledger: skipped {len(skipped)} unreadable line(s): {', '.join(skipped[:3])}"
                + (" ..." if len(skipped) > 3 else "")
            )
        abandoned = {r.get("batch_id") for r in records if r.get("event") == "abandoned"}
        records = [r for r in records if "submission" in r and r.get("batch_id") not in abandoned]
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
        unknown_polls = 0
        while True:
            try:
                batch = await client._batch_call("poll the batch", lambda: aclient.batches.retrieve(batch_id))
            except openai.NotFoundError:  # not this endpoint's (or purged): asked again
                return await self._abandon(batch_id, cids, f"batch {batch_id} not found")
            if batch.status in TERMINAL:
                break
            if batch.status not in RUNNING:
                unknown_polls += 1
                if unknown_polls >= UNKNOWN_STATUS_POLLS:
                    return await self._abandon(
                        batch_id, cids, f"batch status {batch.status!r} unknown to tapir", cancel=True
                    )
            await asyncio.sleep(client.batch_poll_s)
        outcomes: dict[str, tuple[str, Any]] = {}
        wanted = set(cids)
        duplicates: list[str] = []
        unknown: list[str] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                response = await client._batch_call(
                    "download the batch's results", lambda file_id=file_id: aclient.files.content(file_id)
                )
            except openai.NotFoundError:  # the results are gone (deleted, purged): asked again
                return await self._abandon(batch_id, cids, f"batch {batch_id}'s results file is gone")
            for line in response.text.splitlines():
                try:
                    entry = json.loads(line)
                    cid = entry.get("custom_id")
                except (ValueError, AttributeError):
                    unknown.append("(a line that is not a JSON record)")
                    continue
                if cid not in wanted:
                    unknown.append(str(cid))
                elif cid in outcomes:
                    duplicates.append(cid)  # the first line stands; the repeat is counted
                else:
                    outcomes[cid] = client._batch_outcome(entry)
        missing = [cid for cid in cids if cid not in outcomes]
        for name, ids in (("duplicate", duplicates), ("unknown", unknown), ("missing", missing)):
            if ids:
                client._count(f"batch_{name}_ids", len(ids))
                client._warn(
                    f"batch {batch_id} ({batch.status}): {len(ids)} {name} request id(s) in its "
                    f"output: {', '.join(ids[:3])}" + (" ..." if len(ids) > 3 else "")
                )
        for cid in missing:
            done = batch.status == "completed"
            outcomes[cid] = ("retry", "missing from the batch's output" if done else f"batch {batch.status}")
        return outcomes

    async def _abandon(
        self, batch_id: str, cids: list[str], why: str, cancel: bool = False
    ) -> dict[str, tuple[str, Any]]:
        """Give up on ``batch_id`` for good: the ledger says so (no later run resumes it), it is
        cancelled where it may still run, and its requests are asked again in a new batch."""
        if cancel:
            with contextlib.suppress(Exception):  # best effort: the batch may be beyond it
                await self.client._aclient.batches.cancel(batch_id)
        self.ledger.append({"event": "abandoned", "batch_id": batch_id, "reason": why})
        self.client._count("batches_abandoned")
        self.client._warn(f"{why}: its {len(cids)} request(s) go in a new batch")
        return {cid: ("retry", why) for cid in cids}
