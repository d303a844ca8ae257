"""Evaluation answer generation: tapir's batched generator vs one prompt at a time.

FastChat's ``gen_model_answer`` answers each question alone (``model.generate`` on a single
prompt). ``tapir eval`` renders every prompt with the model's own chat template, sorts by length
and generates in left-padded batches. Both run here on the same model, the same AlpacaEval 2.0
instructions (../shared/data) and greedy decoding, in one process, alternating order over
repeats after a discarded warm-up; we report answers per second, the speed ratio, and whether
every answer is identical.

    .venv/bin/python benchmarks/eval_generation.py                          # embedded Gemma 3 270M, CPU
    .venv/bin/python benchmarks/eval_generation.py --vs-engine              # vs tapir eval's llama.cpp engine
    .venv/bin/python benchmarks/eval_generation.py --model Qwen/Qwen2.5-0.5B-Instruct --prompts 64 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "data" / "alpaca_eval" / "alpaca_eval_gpt4_1106_preview_reference.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded", help="'embedded' or a transformers folder / Hub id")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--vs-engine",
        action="store_true",
        help="embedded model: batched transformers vs the served llama.cpp engine `tapir eval` uses",
    )
    args = parser.parse_args()
    if args.vs_engine:
        return vs_engine(args)

    import torch

    from tapir.evaluation.generation import TransformersGenerator

    model = args.model
    if model == "embedded":
        from tapir.serving.embedded_student import materialize_embedded_student

        model = str(materialize_embedded_student(REPO / ".cache" / "tapir"))
    instructions = [r["instruction"] for r in json.loads(REFERENCE.read_text())[: args.prompts]]
    conversations = [[{"role": "user", "content": i}] for i in instructions]
    batched = TransformersGenerator(model, batch_size=args.batch, dtype=args.dtype)
    sequential = TransformersGenerator(model, batch_size=1, dtype=args.dtype)
    sequential.model = batched.model  # the very same weights

    def run(generator: TransformersGenerator) -> tuple[float, list[str]]:
        started = time.perf_counter()
        answers = generator.generate(conversations, args.max_new_tokens, 0.0, 0)
        return time.perf_counter() - started, answers

    run(batched)  # warm-up, discarded
    times: dict[str, list[float]] = {"batched": [], "sequential": []}
    answers: dict[str, list[str]] = {}
    for repeat in range(args.repeats):
        order = ["batched", "sequential"] if repeat % 2 == 0 else ["sequential", "batched"]
        for name in order:
            seconds, out = run(batched if name == "batched" else sequential)
            times[name].append(seconds)
            answers[name] = out
    same = [a == b for a, b in zip(answers["batched"], answers["sequential"])]
    result = {
        "model": args.model,
        "device": "cuda"
        if torch.cuda.is_available()
        else f"cpu ({os.cpu_count()} cores, {platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "prompts": len(conversations),
        "batch": args.batch,
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
        "seconds": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
        "answers_per_s": {k: round(len(conversations) / statistics.median(vs), 3) for k, vs in times.items()},
        "speedup_batched_over_sequential": round(
            statistics.median(times["sequential"]) / statistics.median(times["batched"]), 2
        ),
        "identical_greedy_answers": f"{sum(same)}/{len(same)}",
    }
    print(json.dumps(result, indent=2))
    differing = [n for n, s in enumerate(same) if not s]
    for n in differing[:3]:
        print(f"--- differs at {n}:\nbatched:    {answers['batched'][n]!r}")
        print(f"sequential: {answers['sequential'][n]!r}")
    return 0


def vs_engine(args: argparse.Namespace) -> int:
    """The embedded student's answers as ``tapir eval`` makes them (one llama.cpp engine, requests
    in flight up to its cap) against batched transformers on the converted fp32 weights."""
    import tempfile

    from tapir.evaluation.generation import EngineGenerator, TransformersGenerator
    from tapir.recipe import ModelSpec
    from tapir.serving.embedded_student import materialize_embedded_student
    from tapir.serving.engines import EngineSet
    from tapir.serving.llm_factory import LLMContext

    cache = REPO / ".cache" / "tapir"
    folder = str(materialize_embedded_student(cache))
    instructions = [r["instruction"] for r in json.loads(REFERENCE.read_text())[: args.prompts]]
    conversations = [[{"role": "user", "content": i}] for i in instructions]
    batched = TransformersGenerator(folder, batch_size=args.batch, dtype=args.dtype)
    tokenizer = batched.tokenizer
    times: dict[str, list[float]] = {"transformers batched": [], "llama.cpp engine": []}
    tokens: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch, EngineSet(cache) as engines:
        context = LLMContext(cache_dir=Path(scratch), engines=engines)  # a fresh response cache
        served = EngineGenerator(ModelSpec(backend="llamacpp", model="embedded"), context, "student")
        runners = {"transformers batched": batched, "llama.cpp engine": served}
        for runner in runners.values():  # warm-up, discarded
            runner.generate(conversations[:2], 8, 0.0, 0)
        for repeat in range(args.repeats):
            order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
            for name in order:
                served.llm.response_cache_dir = str(Path(scratch) / f"r{repeat}")  # no cache hits
                started = time.perf_counter()
                answers = runners[name].generate(conversations, args.max_new_tokens, 0.0, repeat)
                times[name].append(time.perf_counter() - started)
                tokens[name] = sum(len(tokenizer(a or "")["input_ids"]) - 1 for a in answers)
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "date": time.strftime("%Y-%m-%d"),
        "prompts": len(conversations),
        "max_new_tokens": args.max_new_tokens,
        "seconds": {k: [round(v, 1) for v in vs] for k, vs in times.items()},
        "answers_per_s": {k: round(len(conversations) / statistics.median(v), 3) for k, v in times.items()},
        "output_tokens_per_s": {k: round(tokens[k] / statistics.median(v), 1) for k, v in times.items()},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
