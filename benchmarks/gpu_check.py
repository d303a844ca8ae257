"""GPU check: one curriculum round of the embedded student's architecture (Gemma 3 270M) on one
GPU in bf16, in tokens/s, against the same script on this CPU.

A GPU machine lent to a session has torch, transformers and accelerate but no TRL, no network
and room for 64 MiB of files, so the check is two steps:

    # here (tapir's venv): the round's conversations, tokenized the way tapir's trainer does it
    # (embedded tokenizer, tapir_chat template, assistant-only loss mask), plus the model config
    .venv/bin/python benchmarks/gpu_check.py prepare            # -> benchmarks/gpu_check_data.json

    # there (or here with --device cpu): transformers' Trainer over those rows; randomly
    # initialised weights of the same architecture (the real ones do not fit the 64 MiB; speed
    # does not depend on the values), bf16 on the GPU
    python benchmarks/gpu_check.py run --data benchmarks/gpu_check_data.json [--device cpu]

``run`` prints one JSON line per setting (batch 2 as the recorded CPU figure, and a GPU-sized
batch) with non-padding tokens/s over ``trainer.train()`` wall time, and the ratio to
``--cpu-tokens-per-second`` (this script's CPU figure in BENCHMARKS.md). It stops itself within
``--budget-s`` (default 420 s: under 8 minutes with start-up).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "gpu_check_data.json"
#: benchmarks/gpu_check.py run --device cpu on the 2-core box (BENCHMARKS.md, "GPU check").
CPU_TOKENS_PER_SECOND = 44.5


def prepare(out: Path, max_length: int) -> None:
    """Tokenize the round's conversations with tapir's own trainer setup (TRL, here)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from training_throughput import conversations  # the 175 self-instruct seed tasks

    from tapir.recipe import recipe_from_dict
    from tapir.serving.embedded_student import materialize_embedded_student
    from tapir.training.model_setup import load_tokenizer

    model = materialize_embedded_student(REPO / ".cache" / "tapir")
    recipe = recipe_from_dict({"name": "gpu-check", "training": {"max_length": max_length}})
    tokenizer = load_tokenizer(str(model), recipe)
    rows = []
    for conversation in conversations():
        encoded = tokenizer.apply_chat_template(
            conversation["messages"], return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = encoded["input_ids"][:max_length], encoded["assistant_masks"][:max_length]
        if any(mask):
            rows.append({"input_ids": list(ids), "assistant_masks": list(mask)})
    config = json.loads((Path(model) / "config.json").read_text())
    keep = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "sliding_window",
        "max_position_embeddings",
        "query_pre_attn_scalar",
    ]
    payload = {
        "model_type": config["model_type"],
        "config": {k: config[k] for k in keep if k in config},
        "pad_token_id": tokenizer.pad_token_id,
        "rows": rows,
        "made_with": {"tokenizer": "Gemma 3 270M", "template": "tapir_chat", "max_length": max_length},
    }
    out.write_text(json.dumps(payload), encoding="utf-8")
    tokens = sum(len(r["input_ids"]) for r in rows)
    print(f"wrote {out}: {len(rows)} conversations, {tokens} tokens, {out.stat().st_size / 1e6:.1f} MB")


def run(data: Path, device: str, steps: int, batches: list[int], budget_s: float, cpu_figure: float) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

    payload = json.loads(data.read_text(encoding="utf-8"))
    rows, pad = payload["rows"], payload["pad_token_id"]
    on_gpu = device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here (use --device cpu for the CPU figure)")
    name = torch.cuda.get_device_name(0) if on_gpu else platform.processor() or platform.machine()
    started = time.perf_counter()

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            attention[i, :n] = 1
            mask = torch.tensor(row["assistant_masks"], dtype=torch.bool)
            labels[i, :n] = torch.where(mask, ids[i, :n], torch.tensor(-100))
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}

    class Tokens:
        """Counts the non-padding tokens the Trainer feeds (what tapir's trainer reports)."""

        seen = 0

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, index: int) -> dict[str, Any]:
            Tokens.seen += len(rows[index]["input_ids"])
            return rows[index]

    for batch in batches:
        if time.perf_counter() - started > budget_s:
            print(json.dumps({"batch": batch, "skipped": "time budget spent"}))
            continue
        torch.manual_seed(0)
        config = AutoConfig.for_model(payload["model_type"], **payload["config"])
        model = AutoModelForCausalLM.from_config(config)
        args = TrainingArguments(
            output_dir=str(data.parent / ".gpu_check_out"),
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=2e-5,
            lr_scheduler_type="cosine",
            bf16=on_gpu,
            use_cpu=not on_gpu,
            logging_steps=max(1, steps // 4),
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,  # the collator needs the assistant masks
            seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=Rows(), data_collator=collate)
        Tokens.seen = 0
        began = time.perf_counter()
        result = trainer.train()
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        rate = Tokens.seen / seconds
        peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
        print(
            json.dumps(
                {
                    "device": name,
                    "dtype": "bf16" if on_gpu else "fp32",
                    "batch": batch,
                    "steps": steps,
                    "tokens": Tokens.seen,
                    "seconds": round(seconds, 2),
                    "tokens_per_second": round(rate, 1),
                    "ratio_to_cpu": round(rate / cpu_figure, 1) if cpu_figure else None,
                    "train_loss": round(float(result.training_loss), 4),
                    "peak_gpu_memory_gib": round(peak, 2) if peak is not None else None,
                    "torch": torch.__version__,
                }
            ),
            flush=True,
        )
        del trainer, model
        if on_gpu:
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("prepare", help="tokenize the round's conversations (tapir's venv)")
    make.add_argument("--out", type=Path, default=DATA)
    make.add_argument("--max-length", type=int, default=512)
    check = sub.add_parser("run", help="train on them: torch + transformers + accelerate only")
    check.add_argument("--data", type=Path, default=DATA)
    check.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    check.add_argument("--steps", type=int, default=30)
    check.add_argument("--batches", type=int, nargs="+", default=[2, 16])
    check.add_argument("--budget-s", type=float, default=420.0)
    check.add_argument("--cpu-tokens-per-second", type=float, default=CPU_TOKENS_PER_SECOND)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.max_length)
    else:
        run(args.data, args.device, args.steps, args.batches, args.budget_s, args.cpu_tokens_per_second)


if __name__ == "__main__":
    main()
