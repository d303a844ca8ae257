"""Data pipeline vs its engine: what the steps-as-clients design costs, quiet and beside a neighbour.

Part A — the same prompts answered (1) by llama.cpp directly, in this process, one after the
other, and (2) by the pipeline's own steps (two ``ResponseGenerator`` steps, teacher and
student, as in the real graph) as clients of the run's one llama.cpp engine. Greedy decoding
and the same token budget on both sides; we report output tokens per second and the ratio.

Part C — the same comparison on vLLM's CPU build (``make vllm-env``), serving the embedded model:
one engine, started once, driven (1) alone by a plain OpenAI client at the engine's concurrency
cap and (2) by the two pipeline steps as its clients (the cap shared across them, as in a run).
Greedy decoding, the same prompts and token budget; prefix caching off, so neither side answers
from what the other left in the engine.

Part B — ``tapir data`` on the embedded default, from an empty cache, quiet and then with one
CPU-busy neighbour process (a Python busy loop the benchmark starts and stops): wall time of
each and their ratio, LLM calls, and the peak memory of every process of the run (one model
copy per distinct model: the engine).

    .venv/bin/python benchmarks/pipeline_throughput.py                    # both parts
    .venv/bin/python benchmarks/pipeline_throughput.py --part a --prompts 24
    .venv/bin/python benchmarks/pipeline_throughput.py --part b --seeds 16
    .venv/bin/python benchmarks/pipeline_throughput.py --part c --prompts 24
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by a test
from process_memory import PeakMemory  # noqa: E402


def _prompts(n: int) -> list[dict[str, str]]:
    from tapir.pipelines.seeds import load_seeds
    from tapir.recipe import SeedSource

    return load_seeds(SeedSource(source="embedded", limit=n), 42)


def engine_alone(rows: list[dict[str, str]], max_new_tokens: int, cache_dir: Path) -> dict[str, float]:
    """llama.cpp in this process: the engine's own speed, no HTTP, no pipeline."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from tapir.pipelines.prompts import render, template_text
    from tapir.serving.embedded import chat_template_path, embedded_gguf_path
    from tapir.serving.llm_factory import TURN_STOP
    from tapir.serving.llms import strip_generation_markers

    llm = Llama(
        str(embedded_gguf_path(cache_dir)), n_ctx=2048, n_threads=os.cpu_count(), verbose=False, seed=42
    )
    vocab = llm._model.token_get_text  # type: ignore[attr-defined]
    llm.chat_handler = Jinja2ChatFormatter(
        template=strip_generation_markers(chat_template_path().read_text()),
        eos_token=vocab(llm.token_eos()),
        bos_token=vocab(llm.token_bos()),
        stop_token_ids=[llm.token_eos()],
    ).to_chat_handler()
    template = template_text("respond")
    tokens = 0
    started = time.perf_counter()
    for _role in ("teacher", "student"):
        for row in rows:
            content = render(template, instruction=row["instruction"], input=row.get("input") or "")
            out = llm.create_chat_completion(
                [{"role": "user", "content": content}],
                max_tokens=max_new_tokens,
                temperature=0.0,
                stop=TURN_STOP,
            )
            tokens += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - started
    return {"output_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 2)}


def pipeline_steps(
    rows: list[dict[str, str]], max_new_tokens: int, work: Path, spec: Any = None, engines: Any = None
) -> dict[str, float]:
    """The same prompts through two of the graph's steps, clients of one engine (llama.cpp unless
    ``spec`` says otherwise; ``engines``: an engine set already running it)."""
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts

    from tapir.pipelines.progress import distilabel_logs_to
    from tapir.pipelines.prompts import template_text
    from tapir.pipelines.tasks import ResponseGenerator
    from tapir.recipe import GenerationSettings, ModelSpec
    from tapir.serving.engines import EngineSet
    from tapir.serving.llm_factory import LLMContext, build_llm
    from tapir.serving.llms import read_usage

    generation = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)
    spec = (spec or ModelSpec()).model_copy(update={"generation": generation})
    usage = work / "usage"
    with contextlib.nullcontext(engines) if engines else EngineSet(work / "cache", log_dir=work) as engines:
        context = LLMContext(cache_dir=work / "cache", usage_dir=usage, engines=engines)
        with Pipeline(name="throughput", cache_dir=str(work / "distilabel")) as pipeline:
            load = LoadDataFromDicts(name="load", data=rows, batch_size=8)
            for role in ("teacher", "student"):
                step = ResponseGenerator(
                    name=f"respond_{role}",
                    llm=build_llm(spec, role, context, step=f"respond_{role}"),
                    template=template_text("respond"),
                    input_batch_size=8,
                    output_mappings={"response": f"{role}_response", "model_name": f"{role}_model"},
                )
                load >> step
        engines.start()
        started = time.perf_counter()
        with distilabel_logs_to(work / "distilabel.log"):
            pipeline.run(use_cache=False)
        seconds = time.perf_counter() - started
    totals = read_usage(usage)
    tokens = sum(int(r["output_tokens"]) for r in totals.values())
    # the steps' own working time: first batch sent to last answer, without distilabel's start-up
    records = [json.loads(x) for f in usage.glob("usage.*.jsonl") for x in f.read_text().splitlines() if x]
    working = max(r["time"] for r in records) - min(r["time"] - r["seconds"] for r in records)
    return {
        "output_tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 2),
        "steps_working_seconds": round(working, 2),
        "steps_tokens_per_s": round(tokens / working, 2),
    }


def part_a(args: argparse.Namespace) -> dict:
    rows = _prompts(args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        alone = engine_alone(rows, args.max_new_tokens, REPO / ".cache" / "tapir")
        steps = pipeline_steps(rows, args.max_new_tokens, work)
    return {
        "prompts": len(rows) * 2,
        "max_new_tokens": args.max_new_tokens,
        "engine_alone": alone,
        "pipeline_steps": steps,
        "ratio": round(steps["tokens_per_s"] / alone["tokens_per_s"], 3),
        "ratio_steps_working": round(steps["steps_tokens_per_s"] / alone["tokens_per_s"], 3),
    }


def vllm_alone(rows: list[dict[str, str]], max_new_tokens: int, engine: Any) -> dict[str, float]:
    """The vLLM engine driven by a plain async OpenAI client, ``max_concurrency`` requests in
    flight: what the engine gives with no pipeline around it."""
    import asyncio

    from openai import AsyncOpenAI

    from tapir.pipelines.prompts import render, template_text

    template = template_text("respond")
    prompts = [
        render(template, instruction=row["instruction"], input=row.get("input") or "")
        for _role in ("teacher", "student")
        for row in rows
    ]

    async def drive() -> int:
        client = AsyncOpenAI(base_url=engine.base_url, api_key="not-needed", max_retries=0)
        gate = asyncio.Semaphore(engine.max_concurrency)

        async def one(content: str) -> int:
            async with gate:
                out = await client.chat.completions.create(
                    model=engine.served_name,
                    messages=[{"role": "user", "content": content}],
                    max_tokens=max_new_tokens,
                    temperature=0.0,
                )
            return out.usage.completion_tokens if out.usage else 0

        return sum(await asyncio.gather(*(one(p) for p in prompts)))

    started = time.perf_counter()
    tokens = asyncio.run(drive())
    seconds = time.perf_counter() - started
    return {"output_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 2)}


def part_c(args: argparse.Namespace) -> dict:
    from tapir.recipe import ModelSpec
    from tapir.serving.backends import vllm_missing
    from tapir.serving.engines import EngineSet

    if missing := vllm_missing():
        raise SystemExit(f"part c: {missing}")
    # vLLM's CPU backend reserves 92 % of RAM unless told a KV cache size (GiB): one is plenty here
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    rows = _prompts(args.prompts)
    spec = ModelSpec(
        backend="vllm",
        model="embedded",
        context_length=2048,
        max_concurrency=args.concurrency,
        options={"no_enable_prefix_caching": True},
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with EngineSet(REPO / ".cache" / "tapir", log_dir=work) as engines:
            engine = engines.ensure(spec, "teacher")
            started = time.perf_counter()
            engines.start()
            ready_s = time.perf_counter() - started
            vllm_alone(rows[:2], 8, engine)  # the engine's first requests are slow (warm-up)
            alone = vllm_alone(rows, args.max_new_tokens, engine)
            steps = pipeline_steps(rows, args.max_new_tokens, work, spec=spec, engines=engines)
    return {
        "engine": "vllm-cpu (make vllm-env), embedded Gemma 3 270M converted, bf16",
        "engine_ready_seconds": round(ready_s, 1),
        "prompts": len(rows) * 2,
        "max_new_tokens": args.max_new_tokens,
        "max_concurrency": args.concurrency,
        "engine_alone": alone,
        "pipeline_steps": steps,
        "ratio": round(steps["tokens_per_s"] / alone["tokens_per_s"], 3),
        "ratio_steps_working": round(steps["steps_tokens_per_s"] / alone["tokens_per_s"], 3),
    }


def run_data(seeds: int, busy: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            str(REPO / ".venv" / "bin" / "tapir"),
            "data",
            "--recipe",
            "recipes/default.yaml",
            "--set",
            f"seeds.limit={seeds}",
            "--set",
            f"cache_dir={tmp}/cache",
            "--output",
            f"{tmp}/out",
        ]
        # the GGUF is assembled once into the shared cache; copying it is not the pipeline's work
        models = Path(tmp) / "cache" / "models"
        models.mkdir(parents=True)
        for gguf in (REPO / ".cache" / "tapir" / "models").glob("*.gguf"):
            os.link(gguf, models / gguf.name)
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            started = time.perf_counter()
            process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            memory = PeakMemory(process.pid, every_s=0.25)
            memory.start()
            _, stderr = process.communicate()
            seconds = time.perf_counter() - started
            memory.done.set()
        finally:
            if neighbour is not None:
                neighbour.kill()
        if process.returncode != 0:
            raise SystemExit(f"tapir data failed: {stderr.decode()[-2000:]}")
        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
    peaks = sorted(memory.peaks.items(), key=lambda kv: -kv[1])
    return {
        "busy_neighbour": busy,
        "seconds": round(seconds, 1),
        "llm_calls": summary["llm_calls_this_run"],
        "peak_rss_mb": {k: round(v) for k, v in peaks[:8]},
    }


def part_b(args: argparse.Namespace) -> dict:
    quiet = run_data(args.seeds, busy=False)
    busy = run_data(args.seeds, busy=True)
    return {
        "seeds": args.seeds,
        "quiet": quiet,
        "busy": busy,
        "ratio": round(busy["seconds"] / quiet["seconds"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["a", "b", "c", "both"], default="both")
    parser.add_argument("--concurrency", type=int, default=16, help="part C: requests in flight")
    parser.add_argument("--prompts", type=int, default=24, help="part A: instructions (x2 roles)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=32, help="part B: seeds of the default recipe")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.part in ("a", "both"):
        result["engine_vs_pipeline"] = part_a(args)
    if args.part in ("b", "both"):
        result["make_data_quiet_vs_busy"] = part_b(args)
    if args.part == "c":
        result["vllm_engine_vs_pipeline"] = part_c(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
