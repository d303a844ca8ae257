"""Closed loop on CPU: what one re-score's student answers cost next to the first pass's.

Runs ``tapir distill`` on the embedded default (a small pool, warm-up + one round, two optimizer
steps a round, so one re-score), then reads the student's usage records of the first pass and of
the re-score: wall seconds of the student's batches, calls and output tokens. With
``--backend`` both it also runs the re-score through transformers (in-process, the pre-engine
way) on the same checkpoint for comparison.

    .venv/bin/python benchmarks/closed_loop_rescore.py                  # llama.cpp re-score
    .venv/bin/python benchmarks/closed_loop_rescore.py --backend both   # + transformers re-score

The GGUF export of the checkpoint (convert + llama.cpp quantize) is timed separately: it is
paid once per checkpoint and reused by evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def student_usage(run: Path) -> dict[str, float]:
    student = json.loads((run / "summary.json").read_text())["usage"]["student"]
    return {k: student[k] for k in ("calls", "seconds", "output_tokens") if k in student}


def distill(output: Path, backend: str, seeds: int, cache: Path) -> float:
    command = [sys.executable, "-m", "tapir.cli", "distill", "--recipe", str(REPO / "recipes/default.yaml")]
    overrides = [
        f"output_dir={output}",
        f"cache_dir={cache}",
        f"seeds.limit={seeds}",
        "curriculum.rounds=1",
        "curriculum.hard_share=[0.5]",
        "curriculum.warmup_size=4",
        "training.max_steps=2",
        f"training.rescore_backend={backend}",
    ]
    for item in overrides:
        command += ["--set", item]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--backend", choices=["llamacpp", "transformers", "both"], default="llamacpp")
    parser.add_argument("--keep", help="keep outputs here")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="tapir-closed-loop-"))
    backends = ["llamacpp", "transformers"] if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "seeds": args.seeds,
    }
    for backend in backends:
        output = work / backend
        shutil.rmtree(output, ignore_errors=True)
        shutil.rmtree(Path(f"{output}-checkpoints"), ignore_errors=True)
        # A private cache per backend so the first pass really runs each time.
        wall = distill(output, backend, args.seeds, work / f"{backend}-cache")
        first = student_usage(output)
        rescored = Path(f"{output}-checkpoints") / "warmup" / "rescored"
        second = student_usage(rescored)
        entry = {
            "distill_wall_s": round(wall, 1),
            "first_pass_student": first,
            "rescore_student": second,
            "ratio_seconds": round(second["seconds"] / first["seconds"], 2),
            "ratio_seconds_per_call": round(
                (second["seconds"] / second["calls"]) / (first["seconds"] / first["calls"]), 2
            ),
        }
        if "output_tokens" in first and first["output_tokens"] and second.get("output_tokens"):
            entry["first_tok_s"] = round(first["output_tokens"] / first["seconds"], 1)
            entry["rescore_tok_s"] = round(second["output_tokens"] / second["seconds"], 1)
        results[backend] = entry
        print(json.dumps({backend: entry}, indent=2), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
