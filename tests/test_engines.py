"""Engines and their clients against tapir's loopback simulator (integration tier): one engine per
model, bounded counted retries, a concurrency cap across processes, no orphan engine however
tapir ends, and one clear line for every engine that cannot be used."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tapir.errors import EndpointError
from tapir.recipe import ModelSpec
from tapir.serving.engines import EngineSet
from tapir.serving.llm_factory import LLMContext, build_llm, choice_constraint, preflight, score_constraint
from tapir.serving.llms import read_usage

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (its parent has not reaped it yet)
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _wait_dead(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _stats(llm) -> dict:
    return httpx.get(llm.base_url.removesuffix("/v1") + "/stats").json()


def _prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Answer request number {i} please."}] for i in range(n)]


def test_roles_with_the_same_model_share_one_engine_and_sampling_never_splits_it(tmp_path):
    engines = EngineSet(tmp_path)
    context = LLMContext(cache_dir=tmp_path, engines=engines)
    spec = ModelSpec(backend="scripted", model="m")
    teacher = build_llm(spec, "teacher", context, step="respond_teacher")
    judge = build_llm(spec, "judge", context, temperature=1.0, constraint=score_constraint(), step="judge")
    other = build_llm(ModelSpec(backend="scripted", model="m", options={"latency_ms": 5}), "x", context)
    plan = engines.plan()
    assert len(plan) == 2 and plan[0]["serves"] == ["judge", "respond_teacher"]
    assert teacher.base_url == judge.base_url != other.base_url
    # the engine's address is not part of the step's identity (cache signatures stay stable)
    assert "base_url" not in teacher.dump() and "slot_dir" not in teacher.dump()


def test_one_engine_loads_the_longest_context_its_roles_ask_for(tmp_path):
    """The eval judge (8192 tokens) and the student (2048) are one GGUF: one engine, loaded long."""
    engines = EngineSet(tmp_path)
    gguf = str(tmp_path / "m.gguf")
    student = engines.ensure(ModelSpec(backend="llamacpp", model=gguf, context_length=2048), "student")
    judge = engines.ensure(ModelSpec(backend="llamacpp", model=gguf, context_length=8192), "judge")
    assert student is judge and len(engines.plan()) == 1
    command = engines.plan()[0]["command"]
    assert command[command.index("--n-ctx") + 1] == "8192"
    other = engines.ensure(ModelSpec(backend="llamacpp", model=gguf, options={"n_batch": 64}), "x")
    assert other is not judge and other.id == judge.id + "#2"  # ids stay unique (log file names)


def test_guided_decoding_travels_in_each_request_as_the_engine_expects():
    from tapir.serving.engine_client import TapirEngineClient

    grammar = TapirEngineClient(model="m", base_url="x", guided="grammar", grammar='root ::= "a"', seed=3)
    body = grammar._body(1, 2, 16, 0.0, 1.0)
    assert body["extra_body"] == {"grammar": 'root ::= "a"'} and body["seed"] == 5
    choices = choice_constraint(["m", "M"])
    vllm = TapirEngineClient(model="m", base_url="x", guided="choice_regex", choices=list(choices.choices))
    assert vllm._body(1, 0, 16, 0.0, 1.0)["extra_body"] == {"structured_outputs": {"choice": ["m", "M"]}}
    regex = TapirEngineClient(model="m", base_url="x", guided="choice_regex", regex=score_constraint().regex)
    assert regex._body(1, 0, 16, 0.0, 1.0)["extra_body"]["structured_outputs"]["regex"].startswith("Rating: ")
    # a server older than 0.10.2 only knows the guided_* fields
    vllm._vllm_fields = regex._vllm_fields = "guided"
    assert vllm._body(1, 0, 16, 0.0, 1.0)["extra_body"] == {"guided_choice": ["m", "M"]}
    assert regex._body(1, 0, 16, 0.0, 1.0)["extra_body"]["guided_regex"].startswith("Rating: ")
    plain = TapirEngineClient(model="m", base_url="x", guided=None, grammar='root ::= "a"')
    assert "extra_body" not in plain._body(1, 0, 16, 0.0, 1.0)


@pytest.mark.parametrize(
    ("version", "field"),
    [
        ("0.32.0", "structured_outputs"),
        ("0.10.2", "structured_outputs"),
        ("0.9.2", "guided_choice"),
        ("", "structured_outputs"),
    ],
)
def test_a_vllm_server_gets_constraints_in_the_fields_its_version_honours(tmp_path, version, field):
    """A current vLLM ignores guided_* (and answers unconstrained); one older than 0.10.2 knows only
    them. The client reads /version once; a server that does not say is taken as current."""
    from tapir.serving.engine_client import TapirEngineClient

    options = {"vllm_version": version} if version else {}
    with EngineSet(tmp_path) as engines:
        engine = engines.ensure(ModelSpec(backend="scripted", model="m", options=options), "judge")
        engines.start()
        client = TapirEngineClient(
            model="m", base_url=engine.base_url, guided="choice_regex", choices=["m", "M"]
        )
        client.load()
        outputs = client.generate_outputs(inputs=_prompts(3), num_generations=1)
        assert all(o["generations"][0] for o in outputs)
        stats = httpx.get(engine.base_url.removesuffix("/v1") + "/stats").json()
    assert stats["constraint_fields"] == {field: 3}


def test_flaky_engine_every_request_answered_or_counted_and_every_fault_retried(tmp_path):
    faults = {
        "rate_5xx": 0.15,
        "rate_429": 0.1,
        "retry_after_s": 0.05,
        "rate_truncated": 0.05,
        "rate_garbage": 0.05,
        "rate_drop": 0.05,
        "rate_timeout": 0.04,
        "hang_s": 30,
        "seed": 11,
    }
    spec = ModelSpec(backend="scripted", model="m", options=faults, max_retries=5, timeout_s=1)
    with EngineSet(tmp_path) as engines:
        context = LLMContext(cache_dir=tmp_path, usage_dir=tmp_path / "usage", engines=engines)
        llm = build_llm(spec, "teacher", context)
        engines.start()
        llm.load()
        llm.retry_base_s = 0.01
        outputs = llm.generate_outputs(inputs=_prompts(40), num_generations=1)
        stats = _stats(llm)
    usage = read_usage(tmp_path / "usage")["teacher"]
    answered = sum(o["generations"][0] is not None for o in outputs)
    failed = [o for o in outputs if o["generations"][0] is None]
    assert answered + len(failed) == 40 and answered >= 36
    assert usage["failed_calls"] == len(failed) and all(o["failures"][0] for o in failed)
    injected = sum(stats["faults"].values())
    assert injected >= 8, stats  # the run really was flaky
    # every injected fault was either retried or ended a request: nothing silent
    assert usage["retries"] + usage["failed_calls"] == injected
    assert stats["requests"] == 40 + usage["retries"]
    # answers that arrived are exactly what the script says (no garbage passed as an answer)
    assert all(o["generations"][0].startswith("[teacher] answer") for o in outputs if o["generations"][0])


def test_retry_after_is_honoured_and_a_final_failure_is_none_with_its_reason(tmp_path):
    spec = ModelSpec(
        backend="scripted", model="m", options={"rate_429": 1.0, "retry_after_s": 0.4}, max_retries=2
    )
    with EngineSet(tmp_path) as engines:
        context = LLMContext(cache_dir=tmp_path, usage_dir=tmp_path / "usage", engines=engines)
        llm = build_llm(spec, "judge", context)
        engines.start()
        llm.load()
        llm.retry_base_s = 0.001
        started = time.perf_counter()
        outputs = llm.generate_outputs(inputs=_prompts(2), num_generations=1)
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.8  # two waits of at least Retry-After
    assert [o["generations"] for o in outputs] == [[None], [None]]
    assert outputs[0]["failures"] == ["HTTP 429 (after 3 attempts)"]
    usage = read_usage(tmp_path / "usage")["judge"]
    assert (usage["retries"], usage["failed_calls"], usage["failure_reasons"]) == (4, 2, {"HTTP 429": 2})
    # a failed answer is never cached: asked again, it goes to the engine again
    assert not any((tmp_path / "responses").glob("**/*.val"))


def test_a_request_the_engine_rejects_fails_alone_not_its_batch(tmp_path):
    from tapir.serving.simulator import HANG_MARKER

    spec = ModelSpec(backend="scripted", model="m", max_retries=1, timeout_s=1)
    with EngineSet(tmp_path) as engines:
        context = LLMContext(cache_dir=tmp_path, engines=engines)
        llm = build_llm(spec, "student", context)
        engines.start()
        llm.load()
        llm.retry_base_s = 0.001
        prompts = [*_prompts(3), [{"role": "user", "content": f"{HANG_MARKER} never answered"}]]
        outputs = llm.generate_outputs(inputs=prompts, num_generations=1)
    assert [o["generations"][0] is not None for o in outputs] == [True, True, True, False]
    assert outputs[3]["failures"] == ["timeout (after 2 attempts)"]


CAP_CLIENT = """
import json, sys
from tapir.serving.engine_client import TapirEngineClient
llm = TapirEngineClient(model="m", base_url=sys.argv[1], slot_dir=sys.argv[2], max_concurrency=3,
                        role="student", max_retries=0)
llm.load()
prompts = [[{"role": "user", "content": f"process {sys.argv[3]} request {i}"}] for i in range(6)]
out = llm.generate(inputs=prompts, num_generations=1)
print(json.dumps(sum(o["generations"][0] is not None for o in out)))
"""


def test_max_concurrency_caps_requests_in_flight_across_processes(tmp_path):
    spec = ModelSpec(backend="scripted", model="m", options={"latency_ms": 300}, max_concurrency=3)
    with EngineSet(tmp_path) as engines:
        engine = engines.ensure(spec, "student")
        engines.start()
        clients = [
            subprocess.Popen(
                [sys.executable, "-c", CAP_CLIENT, engine.base_url, engine.slot_dir, str(n)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(2)
        ]
        answered = [int(c.communicate(timeout=60)[0]) for c in clients]
        stats = httpx.get(engine.base_url.removesuffix("/v1") + "/stats").json()
    assert answered == [6, 6]
    assert stats["max_in_flight"] == 3  # 12 requests at once from two processes, never more than 3


OWNER = """
import sys, time
from pathlib import Path
from tapir.serving.engines import EngineSet
from tapir.recipe import ModelSpec
engines = EngineSet(Path(sys.argv[1]))
engines.ensure(ModelSpec(backend="scripted", model="m"), "judge")
try:
    engines.start()
    print(engines.pids()[0], flush=True)
    time.sleep(600)
finally:
    engines.stop()
"""


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_no_engine_outlives_tapir_however_it_ends(tmp_path, how):
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    engine_pid = int(owner.stdout.readline())
    assert _alive(engine_pid)
    owner.send_signal(getattr(signal, how))
    owner.wait(timeout=30)
    assert _wait_dead(engine_pid), f"engine {engine_pid} outlived tapir after {how}"


def test_engines_stop_on_normal_exit_and_on_error(tmp_path):
    spec = ModelSpec(backend="scripted", model="m")
    with EngineSet(tmp_path) as engines:
        engines.ensure(spec, "judge")
        engines.start()
        (pid,) = engines.pids()
        assert _alive(pid)
    assert _wait_dead(pid)
    with pytest.raises(RuntimeError), EngineSet(tmp_path) as engines:
        engines.ensure(spec, "judge")
        engines.start()
        (pid,) = engines.pids()
        raise RuntimeError("a step failed")
    assert _wait_dead(pid)


def test_an_engine_that_cannot_start_is_one_line_naming_it_and_nothing_is_left(tmp_path, monkeypatch):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")
    engines = EngineSet(tmp_path)
    engines.ensure(ModelSpec(backend="scripted", model="ok"), "teacher")
    engines.ensure(ModelSpec(backend="llamacpp", model=str(bad)), "judge")
    with pytest.raises(EndpointError, match=r"llamacpp:broken.gguf: the llamacpp engine exited"):
        engines.start()
    assert engines.pids() == []  # the engine that did start was stopped too

    busy = EngineSet(tmp_path)
    engine = busy.ensure(ModelSpec(backend="scripted", model="m"), "judge")
    port = int(engine.base_url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(EndpointError, match="scripted:m: the scripted engine exited"):
            busy.start()

    monkeypatch.setenv("TAPIR_VLLM_VENV", str(tmp_path / "no-such-venv"))
    monkeypatch.setenv("PATH", str(tmp_path))
    no_vllm = EngineSet(tmp_path)
    no_vllm.ensure(ModelSpec(backend="vllm", model="meta-llama/Llama-2-7b-hf"), "student")
    with pytest.raises(EndpointError, match=r"vllm is not installed here: `make vllm-env` builds"):
        no_vllm.start()


def test_an_endpoint_without_the_model_or_not_openai_compatible_is_named(tmp_path):
    with EngineSet(tmp_path) as engines:
        engine = engines.ensure(ModelSpec(backend="scripted", model="x", options={"models": ["served"]}), "j")
        engines.start()
        spec = ModelSpec(backend="openai", model="other-model", base_url=engine.base_url)
        with pytest.raises(
            EndpointError, match=r"^judge\.model: .* does not serve 'other-model' \(it serves served\)"
        ):
            preflight(spec, "judge")
        preflight(ModelSpec(backend="openai", model="served", base_url=engine.base_url), "judge")
        not_openai = ModelSpec(backend="openai", model="x", base_url=engine.base_url + "/nothing-here")
        with pytest.raises(EndpointError, match=r"^teacher\.base_url: .* is not an OpenAI-compatible"):
            preflight(not_openai, "teacher")


def test_paper_recipe_plan_one_student_engine_for_steps_and_rescore_external_teacher_and_judge():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapir.cli",
            "distill",
            "--dry-run",
            "--json",
            "--recipe",
            "recipes/paper-llama2-7b.yaml",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OPENAI_API_KEY": "", "TAPIR_VLLM_VENV": "/nonexistent"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    by_backend = {}
    for engine in plan["engines"]:
        by_backend.setdefault(engine["backend"], []).append(engine)
    (student,) = by_backend["vllm"]
    assert {"respond_student", "respond_student_expanded"} <= set(student["serves"])
    assert any(s.startswith("re-score after") for s in student["serves"])
    assert student["command"][:2] == ["vllm", "serve"] and "--tensor-parallel-size" in student["command"]
    assert all(not e["started_by_tapir"] for e in by_backend["openai"]) and len(by_backend["openai"]) == 2
    assert plan["estimate"]["calls"] > 0 and plan["training"]["closed_loop"] is True


def _ready_then_sleep(ready) -> None:
    ready.set()
    time.sleep(60)


def test_a_forked_worker_still_dies_on_sigterm_while_engines_run(tmp_path):
    """distilabel forks its step workers after the engines start and ends them with SIGTERM, so
    starting engines must leave SIGTERM's default action in place: a Python handler inherited by
    a worker left it blocked on its pool's queue lock and the pipeline's teardown waited for
    ever (seen in `make data` and the closed loop)."""
    import multiprocessing

    with EngineSet(tmp_path) as engines:
        engines.ensure(ModelSpec(backend="scripted", model="m"), "judge")
        engines.start()
        fork = multiprocessing.get_context("fork")
        ready = fork.Event()
        child = fork.Process(target=_ready_then_sleep, args=(ready,))
        child.start()
        assert ready.wait(10)  # a signal in the instant after fork is lost by CPython itself
        child.terminate()
        child.join(10)
    assert child.exitcode == -signal.SIGTERM


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a core to give up")
def test_llamacpp_threads_yield_the_core_a_busy_neighbour_takes():
    """llama.cpp's barrier-synchronised threads stall when a neighbour takes one of their cores
    (BENCHMARKS.md: 25 vs 48 tokens/s on 2 cores), so the engine gives that core up."""
    from tapir.serving.llamacpp_server import ThreadGovernor

    cores = os.cpu_count() or 2
    given: list[int] = []
    governor = ThreadGovernor(lambda threads, batch: given.append(threads), cores, every_s=0.3)
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        governor.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not given:
            time.sleep(0.1)
    finally:
        neighbour.kill()
        governor.stopped.set()
    assert given and given[-1] <= cores - 1


def test_the_embedded_instruct_model_is_served_by_llamacpp_only(tmp_path):
    from tapir.serving.llm_factory import model_id

    spec = ModelSpec(backend="vllm", model="embedded-instruct")
    with pytest.raises(
        EndpointError, match=r"teacher.backend: the embedded model 'embedded-instruct' is a GGUF"
    ):
        EngineSet(tmp_path).ensure(spec, "teacher")
    assert model_id(ModelSpec(backend="llamacpp", model="embedded-instruct")).startswith("HuggingFaceTB/")
    plan = EngineSet(tmp_path).ensure(ModelSpec(backend="llamacpp", model="embedded-instruct"), "teacher")
    assert "<embedded GGUF>:embedded-instruct" in plan.command and "--chat-template" not in plan.command
