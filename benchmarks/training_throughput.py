"""Training throughput: tapir's round trainer vs plain TRL ``SFTTrainer``, same data, same settings.

Both train the same model on the same conversations (the 175 self-instruct seed tasks with their
reference outputs, from ../shared/data) with identical hyper-parameters, in one process, one
after the other (order alternates over repeats, after one discarded warm-up run). Throughput
is non-padding input tokens per second of ``trainer.train()`` wall time, as the Trainer counts
them. Our trainer adds the recipe translation, template checks (before ``train()``) and two
callbacks (inside it); the ratio shows what that costs.

    .venv/bin/python benchmarks/training_throughput.py                  # embedded Gemma 3 270M, CPU
    .venv/bin/python benchmarks/training_throughput.py --model tiny     # a random tiny model (smoke)
    .venv/bin/python benchmarks/training_throughput.py --model Qwen/Qwen2.5-0.5B --steps 30 --bf16  # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO.parent / "shared" / "data" / "seed" / "self_instruct_seed_tasks.jsonl"


def conversations() -> list[dict[str, Any]]:
    rows = []
    for line in SEEDS.read_text(encoding="utf-8").splitlines():
        task = json.loads(line)
        instance = task["instances"][0]
        prompt = task["instruction"] + (f"\n\n{instance['input']}" if instance.get("input") else "")
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": instance["output"]},
                ]
            }
        )
    return rows


def resolve_model(name: str, work: Path) -> str:
    if name == "embedded":
        from tapir.serving.embedded_student import materialize_embedded_student

        return str(materialize_embedded_student(REPO / ".cache" / "tapir"))
    if name == "tiny":
        from tests.tiny_student import build_tiny_student

        corpus = [m["content"] for row in conversations() for m in row["messages"]]
        return str(build_tiny_student(work / "tiny", corpus, context=2048))
    return name


def run_ours(model: str, data: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    from tapir.recipe import recipe_from_dict
    from tapir.training.sft import RoundSpec, build_trainer

    recipe = recipe_from_dict(
        {
            "name": "bench",
            "seed": 0,
            "student": {"backend": "transformers", "model": model},
            "training": {
                "max_steps": args.steps,
                "per_device_train_batch_size": args.batch,
                "max_length": args.max_length,
                "learning_rate": 2e-5,
                "warmup_steps": 0.0,
                "bf16": args.bf16,
                "save_steps": 10_000,
                "chat_template": str(REPO / "core" / "templates" / "tapir_chat.jinja"),
            },
        }
    )
    spec = RoundSpec("bench", data, model, work / "ours")
    trainer = build_trainer(recipe, spec)
    return _timed(trainer)


def run_plain(model: str, data: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = (REPO / "core" / "templates" / "tapir_chat.jinja").read_text()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = datasets.load_dataset("parquet", data_files=str(data), split="train")
    config = SFTConfig(
        output_dir=str(work / "plain"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        max_length=args.max_length,
        learning_rate=2e-5,
        lr_scheduler_type="cosine",
        assistant_only_loss=True,
        bf16=args.bf16,
        activation_checkpointing=False,  # TRL turns it on by default; tapir's recipe default is off
        save_strategy="no",
        logging_steps=1,
        seed=0,
        data_seed=0,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        dataloader_pin_memory=_cuda(),
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    return _timed(trainer)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _timed(trainer: Any) -> dict[str, float]:
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokens = int(trainer.state.num_input_tokens_seen)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded", help="embedded, tiny, a Hub id or a folder")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--batch", type=int, default=2, help="per-device batch size")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each trainer (order alternates)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if not SEEDS.is_file():
        sys.exit(f"shared data missing: {SEEDS}")

    import datasets
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "bench.parquet"
        datasets.Dataset.from_list(conversations()).to_parquet(str(data))
        model = resolve_model(args.model, work)
        results: dict[str, list[dict[str, float]]] = {"ours": [], "plain": []}
        # One short discarded run first: the first training in a process pays for lazy imports,
        # allocator growth and page faults, which would otherwise bias whichever trainer runs first.
        run_plain(model, data, work / "discarded", argparse.Namespace(**{**vars(args), "steps": 2}))
        order = [("plain", run_plain), ("ours", run_ours)]
        for repeat in range(args.repeats):
            for name, run in order if repeat % 2 == 0 else order[::-1]:
                results[name].append(run(model, data, work / f"{name}{repeat}", args))
                print(f"{name:5s} run {repeat + 1}: {results[name][-1]}", flush=True)

    ours = statistics.median(r["tokens_per_second"] for r in results["ours"])
    plain = statistics.median(r["tokens_per_second"] for r in results["plain"])
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU {platform.machine()}, {os.cpu_count()} cores"
    )
    summary = {
        "model": args.model,
        "device": device,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "batch": args.batch,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "tokens_per_second": {"ours": round(ours, 1), "plain_trl": round(plain, 1)},
        "ratio_ours_over_plain": round(ours / plain, 3),
        "runs": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
