"""``tapir eval score-alpaca`` / ``score-mt-bench``: scores from stored files, as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from tapir.errors import DataError
from tapir.evaluation import alpaca_metrics, mt_bench_metrics


def score_alpaca(annotations: str, difficulty: str | None, cache_dir: str) -> dict:
    metrics = alpaca_metrics.score(alpaca_metrics.load_annotations(annotations), difficulty, cache_dir)
    return {key: metrics[key] for key in alpaca_metrics.SCORE_KEYS}


def score_mt_bench(judgments: str, questions: str | None) -> dict:
    """Scores re-parsed from the judgment texts with fschat's patterns (a record without text
    keeps its stored score, fschat's -1 counting as unparsed)."""
    path = Path(judgments)
    if not path.is_file():
        raise DataError(f"--judgments: file not found: {judgments}")
    try:
        table = pd.read_json(path, lines=True)
    except ValueError as exc:
        raise DataError(f"--judgments: {path} is not JSON lines ({exc})") from None
    for column in ("question_id", "turn"):
        if column not in table.columns:
            raise DataError(f"--judgments: records lack {column!r}")
    if "judgment" in table.columns:
        table["score"] = table["judgment"].map(mt_bench_metrics.parse_rating)
    elif "score" in table.columns:
        table["score"] = table["score"].where(table["score"] != -1)
    else:
        raise DataError("--judgments: records have neither 'judgment' nor 'score'")
    if "category" not in table.columns:
        if not questions:
            raise DataError("--questions: the judgments carry no category; give MT-Bench's question.jsonl")
        categories = {
            q["question_id"]: q["category"]
            for q in (json.loads(line) for line in Path(questions).read_text().splitlines() if line.strip())
        }
        table["category"] = table["question_id"].map(categories)
        if table["category"].isna().any():
            raise DataError(f"--questions: {questions} lacks some judged question ids")
    if "model" in table.columns and table["model"].nunique() > 1:
        return {
            model: mt_bench_metrics.summarize(group) for model, group in table.groupby("model", sort=True)
        }
    return mt_bench_metrics.summarize(table)


def score_command(args: argparse.Namespace) -> str:
    if args.eval_command == "score-alpaca":
        return json.dumps(score_alpaca(args.annotations, args.difficulty, args.cache_dir), indent=2)
    return json.dumps(score_mt_bench(args.judgments, args.questions), indent=2)
