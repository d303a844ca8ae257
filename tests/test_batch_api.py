"""The Batch API client (integration tier) against tapir's simulator: a role with ``batch: true``
gets the online answers through /v1/files + /v1/batches, retries what a batch failed or let
expire, and never submits a request twice — not even after a kill (the ledger), nor when the
kill fell between the create call and the ledger line (the batch's metadata)."""

from __future__ import annotations

import json

import httpx
import pytest

from tapir.errors import EndpointError
from tapir.recipe import ModelSpec
from tapir.serving.batch_api import BatchLedger, custom_id
from tapir.serving.engines import EngineSet
from tapir.serving.llm_factory import LLMContext, build_llm, preflight
from tapir.serving.llms import read_usage

pytestmark = pytest.mark.integration

FAULTY = {"batch_delay_s": 0.2, "batch_fail_rate": 0.3, "batch_expire_every": 2}


def _prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Answer request number {i} please."}] for i in range(n)]


def _stats(llm) -> dict:
    return httpx.get(llm.base_url.removesuffix("/v1") + "/stats").json()


def _client(context: LLMContext, batch: bool, options: dict | None = None, role: str = "teacher"):
    spec = ModelSpec(
        backend="scripted",
        model="m",
        batch=batch,
        batch_poll_s=0.05,
        max_retries=6,
        options=options or FAULTY,
    )
    llm = build_llm(spec, role, context, step=f"respond_{role}")
    context.engine_set().start()
    llm.load()
    return llm


@pytest.fixture
def context(tmp_path):
    engines = EngineSet(tmp_path / "engines")
    yield LLMContext(cache_dir=tmp_path / "cache", usage_dir=tmp_path / "logs", engines=engines)
    engines.stop()


def test_a_batch_gives_the_online_answers_and_retries_what_failed_or_expired(context):
    apart = LLMContext(cache_dir=context.cache_dir.with_name("online-cache"), engines=context.engines)
    online = _client(apart, batch=False).generate_outputs(_prompts(12))
    llm = _client(context, batch=True)
    before = _stats(llm)
    batched = llm.generate_outputs(_prompts(12))
    after = _stats(llm)

    assert [o["generations"] for o in batched] == [o["generations"] for o in online]
    assert [o["statistics"] for o in batched] == [o["statistics"] for o in online]
    created = after["batches_created"] - before["batches_created"]
    assert created >= 2  # the first batch expired half-way and lost 30 % more: asked again
    assert after["batch_requests_again"] == 0  # nothing answered was sent twice
    usage = read_usage(context.usage_dir)["teacher"]
    assert usage["batches"] == created
    assert usage["retries"] == after["batch_requests"] - before["batch_requests"] - 12
    assert len(usage["batch_ids"]) == created and usage["failed_calls"] == 0
    # The response cache holds the batch answers: asked again, nothing reaches the endpoint.
    again = _client(context, batch=True).generate_outputs(_prompts(12))
    assert [o["generations"] for o in again] == [o["generations"] for o in online]
    assert _stats(llm)["batches_created"] == after["batches_created"]


def test_requests_that_fail_in_every_batch_are_counted_and_say_why(context):
    llm = _client(context, batch=True, options={"batch_delay_s": 0.05, "batch_fail_rate": 1.0})
    out = llm.generate_outputs(_prompts(3))
    assert all(o["generations"] == [None] for o in out)
    assert all(o["failures"][0].startswith("HTTP 500 (after 7 batches)") for o in out)
    usage = read_usage(context.usage_dir)["teacher"]
    assert usage["failed_calls"] == 3 and usage["failure_reasons"] == {"HTTP 500": 3}
    assert usage["batches"] == 7


def _submit_only(llm, prompts) -> str:
    """What a run killed while polling leaves: a batch created and in the ledger, never collected."""
    import asyncio

    from tapir.serving.batch_api import BatchRound

    ledger = BatchLedger(llm.batch_dir, llm.role, llm.base_url)
    round_ = BatchRound(llm, len(prompts), ledger)
    for prompt in prompts:
        body = llm._body(1, 0, 128, 1.0, 1.0)
        line = {**body, "messages": prompt}
        cid = custom_id(llm.role, line)
        round_.lines[cid] = line
    return asyncio.run(round_._submit(sorted(round_.lines)))


def test_a_rerun_polls_the_batch_a_killed_run_created_instead_of_submitting_again(context):
    llm = _client(context, batch=True, options={"batch_delay_s": 0.3})
    prompts = _prompts(5)
    llm.generation_kwargs = {"max_new_tokens": 128, "temperature": 1.0, "top_p": 1.0}
    batch_id = _submit_only(llm, prompts)
    created = _stats(llm)["batches_created"]

    rerun = _client(context, batch=True, options={"batch_delay_s": 0.3})
    rerun.generation_kwargs = llm.generation_kwargs
    out = rerun.generate_outputs(prompts, **llm.generation_kwargs)
    assert all(o["generations"][0].startswith("[teacher] answer") for o in out)
    stats = _stats(rerun)
    assert stats["batches_created"] == created and stats["batch_requests_again"] == 0
    assert read_usage(context.usage_dir)["teacher"]["batches_resumed"] == 1
    assert batch_id.startswith("batch_")


def test_a_kill_between_create_and_ledger_line_is_found_in_the_endpoints_batches(context):
    llm = _client(context, batch=True, options={"batch_delay_s": 0.3})
    llm.generation_kwargs = {"max_new_tokens": 128, "temperature": 1.0, "top_p": 1.0}
    prompts = _prompts(4)
    _submit_only(llm, prompts)
    # Drop the "created" line: the kill came right after the create call.
    for path in context.cache_dir.joinpath("batches").glob("*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in lines if r["event"] != "created"))
    created = _stats(llm)["batches_created"]

    out = _client(context, batch=True, options={"batch_delay_s": 0.3}).generate_outputs(
        prompts, **llm.generation_kwargs
    )
    assert all(o["generations"][0].startswith("[teacher] answer") for o in out)
    assert _stats(llm)["batches_created"] == created  # adopted through its metadata
    records = BatchLedger(context.cache_dir / "batches", "teacher", llm.base_url).records()
    assert any(r.get("adopted") for r in records)


def test_an_endpoint_without_a_batch_api_is_one_line_before_the_run(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NoBatches(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
            status = 200 if self.path.startswith("/v1/models") else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoBatches)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        spec = ModelSpec(backend="openai", model="m", base_url=url, batch=True)
        with pytest.raises(
            EndpointError, match=r"^judge\.batch: .* has no Batch API \(GET /batches: HTTP 404\)"
        ):
            preflight(spec, "judge")
    finally:
        server.shutdown()


def test_batch_is_refused_for_a_backend_without_the_api():
    with pytest.raises(ValueError, match="batch: the Batch API is an endpoint's"):
        ModelSpec(backend="llamacpp", batch=True)


# --- nothing stuck for good, nothing taken silently (issue 34) ----------------------------------


def _ledger_events(context, event: str) -> list[dict]:
    found = []
    for path in context.cache_dir.joinpath("batches").glob("*.jsonl"):
        found += [r for line in path.read_bytes().splitlines() if (r := _json_or_none(line))]
    return [r for r in found if r.get("event") == event]


def _json_or_none(line: bytes) -> dict | None:
    try:
        return json.loads(line.decode())
    except ValueError:
        return None


def test_a_batch_whose_results_are_gone_is_abandoned_once_and_its_requests_asked_again(context):
    options = {"batch_delay_s": 0.05, "batch_output_gone_first": 1}
    llm = _client(context, batch=True, options=options)
    llm.generation_kwargs = {"max_new_tokens": 128, "temperature": 1.0, "top_p": 1.0}
    prompts = _prompts(4)
    gone = _submit_only(llm, prompts)  # a killed run's batch: its results will be gone (404)

    rerun = _client(context, batch=True, options=options)
    out = rerun.generate_outputs(prompts, **llm.generation_kwargs)
    assert all(o["generations"][0].startswith("[teacher] answer") for o in out)
    usage = read_usage(context.usage_dir)["teacher"]
    assert usage["batches_abandoned"] == 1 and usage["failed_calls"] == 0
    assert [r["batch_id"] for r in _ledger_events(context, "abandoned")] == [gone]
    # a later run never polls the abandoned batch again (and the cache answers anyway)
    again = _client(context, batch=True, options=options)
    ledger = BatchLedger(context.cache_dir / "batches", "teacher", again.base_url)
    import asyncio

    from tapir.serving.batch_api import BatchRound

    round_ = BatchRound(again, 1, ledger)
    cids = {cid for r in _ledger_events(context, "created") for cid in r["custom_ids"]}
    known = asyncio.run(round_._known_batches(cids))
    assert gone not in known and known


def test_a_batch_status_tapir_does_not_know_is_not_polled_forever(context):
    llm = _client(context, batch=True, options={"batch_delay_s": 0.05, "batch_unknown_status_first": 1})
    out = llm.generate_outputs(_prompts(3))
    assert all(o["generations"][0].startswith("[teacher] answer") for o in out)
    usage = read_usage(context.usage_dir)["teacher"]
    assert usage["batches_abandoned"] == 1 and usage["batches"] == 2 and usage["failed_calls"] == 0
    assert "unknown to tapir" in _ledger_events(context, "abandoned")[0]["reason"]


def test_a_repeated_id_in_a_batch_output_is_counted_and_the_first_line_kept(context):
    apart = LLMContext(cache_dir=context.cache_dir.with_name("online-cache"), engines=context.engines)
    online = _client(apart, batch=False, options={}).generate_outputs(_prompts(3))
    llm = _client(context, batch=True, options={"batch_delay_s": 0.05, "batch_duplicate_lines": True})
    out = llm.generate_outputs(_prompts(3))
    assert [o["generations"] for o in out] == [o["generations"] for o in online]
    assert read_usage(context.usage_dir)["teacher"]["batch_duplicate_ids"] == 3


def test_an_unreadable_ledger_line_is_named_and_skipped_not_fatal(context):
    llm = _client(context, batch=True, options={"batch_delay_s": 0.05})
    ledger = context.cache_dir / "batches"
    ledger.mkdir(parents=True, exist_ok=True)
    (ledger / "teacher.1.jsonl").write_bytes(b'{"event": "created", "batch_id": "x\xff"}\nnot json\n')
    out = llm.generate_outputs(_prompts(2))
    assert all(o["generations"][0].startswith("[teacher] answer") for o in out)
    usage = read_usage(context.usage_dir)["teacher"]
    assert usage["ledger_lines_skipped"] == 2 and usage["failed_calls"] == 0
    _, skipped = BatchLedger(ledger, "teacher", llm.base_url).read()
    assert skipped == [f"{ledger / 'teacher.1.jsonl'} line 1", f"{ledger / 'teacher.1.jsonl'} line 2"]


def test_a_batch_upload_refused_for_good_is_a_refusal_not_a_retry(context):
    llm = _client(context, batch=True, options={"batch_delay_s": 0.05, "batch_refuse_files": 413})
    out = llm.generate_outputs(_prompts(2))
    assert all(o["generations"] == [None] for o in out)
    reasons = read_usage(context.usage_dir)["teacher"]["failure_reasons"]
    assert list(reasons) == ["batch API refused: upload the batch file: HTTP 413: the file is too large"]
