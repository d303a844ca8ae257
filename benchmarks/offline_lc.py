"""Offline length-controlled win rate against the published values, leave-one-out.

The LC win rate needs a per-instruction difficulty that alpaca_eval downloads. Offline, tapir
estimates it from a folder of other models' real annotations (``evaluation.alpaca_eval.difficulty:
<folder>``), leaving out the annotations of the model being scored. This scores every model of
``../shared/data/alpaca_eval/annotations/`` (in the folder, so left out of its own estimate) and
of ``../shared/data/published/alpaca_eval/`` (never in the folder: out of sample) and prints the
deviation of each from its published LC (alpaca_eval's leaderboard), as a Markdown table.

    .venv/bin/python benchmarks/offline_lc.py [--shared ../shared/data] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from tapir.evaluation import alpaca_metrics

#: A deliberately length-gamed output set: its published LC leans on alpaca_eval's
#: regularisation towards the two gamed baselines, whose annotations are only in df_gamed.csv.
GAMED = {"gpt4_gamed"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    shared = Path(args.shared)
    folder = shared / "alpaca_eval" / "annotations"
    board = pd.read_csv(
        shared / "alpaca_eval" / "leaderboard_weighted_alpaca_eval_gpt4_turbo.csv", index_col=0
    )
    out_of_sample = pd.read_csv(shared / "published" / "alpaca_eval" / "leaderboard_rows.csv", index_col=0)
    cases = [(p.stem, p, board.loc[p.stem], "left out") for p in sorted(folder.glob("*.json"))]
    cases += [
        (name, shared / "published" / "alpaca_eval" / name / "annotations.json", row, "out of sample")
        for name, row in out_of_sample.iterrows()
    ]
    rows = []
    with tempfile.TemporaryDirectory() as cache, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, path, published, how in cases:
            metrics = alpaca_metrics.score(alpaca_metrics.load_annotations(path), folder, cache)
            ours, theirs = metrics["length_controlled_winrate"], float(published["length_controlled_winrate"])
            rows.append(
                {
                    "model": name,
                    "estimate": how,
                    "published_lc": round(theirs, 2),
                    "offline_lc": round(ours, 2),
                    "deviation": round(ours - theirs, 2),
                    "win_rate": round(metrics["win_rate"], 2),
                }
            )
    print("| model | difficulty estimate | published LC | offline LC | deviation | win rate |")
    print("|---|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: -abs(r["deviation"])):
        note = " (gamed: see below)" if r["model"] in GAMED else ""
        print(
            f"| {r['model']}{note} | {r['estimate']} | {r['published_lc']:.2f} | {r['offline_lc']:.2f} | "
            f"{r['deviation']:+.2f} | {r['win_rate']:.2f} |"
        )
    honest = [abs(r["deviation"]) for r in rows if r["model"] not in GAMED]
    print(
        f"\n{len(honest)} models (gamed aside): {sum(d <= 1.0 for d in honest)} within 1.0 point, "
        f"largest |deviation| {max(honest):.2f}, mean {sum(honest) / len(honest):.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
