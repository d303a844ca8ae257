"""Write the evaluation samples the embedded default ships (``tapir/benchmark_samples/``) from the
real benchmark files in ``../shared/data``, so ``make eval`` runs on a clone with nothing beside it.

AlpacaEval: the first ``N`` instructions of alpaca_eval's own seeded shuffle (what ``limit: N``
takes from the full 805), in that order, with their reference outputs and their position in the
full set; and their instruction difficulty, estimated from 15 models' real annotations exactly as
``evaluation.alpaca_eval.difficulty: <folder>`` does, indexed by that position. MT-Bench: fschat's
question, judge-prompt and reference-answer files, whole (they are small). And all 805
AlpacaEval instructions (text only), which decontamination keeps out of the training data.

    .venv/bin/python tools/make_eval_samples.py [--shared ../shared/data] [--size 32]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from tapir.evaluation.alpaca_eval_bench import ALPACA_EVAL_SHUFFLE_SEED
from tapir.evaluation.alpaca_metrics import estimated_difficulty

SAMPLES = Path(__file__).resolve().parents[1] / "tapir" / "benchmark_samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    shared = Path(args.shared)

    reference = pd.DataFrame(
        json.loads((shared / "alpaca_eval" / "alpaca_eval_gpt4_1106_preview_reference.json").read_text())
    )
    reference["position"] = range(len(reference))
    sample = reference.sample(frac=1, random_state=ALPACA_EVAL_SHUFFLE_SEED)[: args.size]
    out = SAMPLES / "alpaca_eval"
    out.mkdir(parents=True, exist_ok=True)
    records = sample[["dataset", "instruction", "output", "generator", "position"]].to_dict("records")
    (out / "reference_outputs.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    # every instruction (no outputs): what decontamination keeps out of the training data
    instructions = [{"instruction": text} for text in reference["instruction"]]
    (out / "instructions.json").write_text(json.dumps(instructions, indent=0, ensure_ascii=False) + "\n")

    by_instruction = estimated_difficulty(shared / "alpaca_eval" / "annotations", ".cache/tapir")
    difficulty = pd.DataFrame(
        {"instruction_difficulty": by_instruction.reindex(sample["instruction"]).to_numpy()},
        index=pd.Index(sample["position"], name="position"),
    )
    if difficulty["instruction_difficulty"].isna().any():
        raise SystemExit("an instruction of the sample has no estimated difficulty")
    difficulty.to_csv(out / "instruction_difficulty.csv")

    mt = SAMPLES / "mt_bench"
    (mt / "reference_answer").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared / "mt_bench" / "question.jsonl", mt / "question.jsonl")
    shutil.copyfile(shared / "mt_bench" / "judge_prompts.jsonl", mt / "judge_prompts.jsonl")
    shutil.copyfile(
        shared / "mt_bench" / "reference_answer" / "gpt-4.jsonl", mt / "reference_answer" / "gpt-4.jsonl"
    )
    print(f"wrote {SAMPLES}: {len(records)} AlpacaEval instructions, MT-Bench files")


if __name__ == "__main__":
    main()
