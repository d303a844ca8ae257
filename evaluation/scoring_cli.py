"""``tapir eval score-alpaca`` / ``score-mt-bench``: scores from stored files, as JSON."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from tapir.errors import DataError
from tapir.evaluation import alpaca_metrics, mt_bench_metrics
from tapir.json_text import json_lines, read_text


def score_alpaca(annotations: str, difficulty: str | None, cache_dir: str) -> dict:
    table = alpaca_metrics.load_annotations(annotations)
    metrics = alpaca_metrics.score(table, difficulty, cache_dir)
    # Rows with a null preference are counted, never scored.
    return {key: metrics[key] for key in alpaca_metrics.SCORE_KEYS} | {
        "n_unjudged": int(table["preference"].isna().sum())
    }


def score_mt_bench(judgments: str, questions: str | None) -> dict:
    """Scores re-parsed from the judgment texts with fschat's patterns (a record without text
    keeps its stored score, fschat's -1 counting as unparsed)."""
    path = Path(judgments)
    if not path.exists() or path.is_dir():  # a file, or a pipe (`--judgments <(...)`): read once
        raise DataError(f"--judgments: file not found: {judgments}")
    records = _judgment_records(path)
    if not records:
        raise DataError(f"--judgments: {path} has no records")
    table = pd.DataFrame.from_records(records)
    for column in ("question_id", "turn"):
        if column not in table.columns:
            raise DataError(f"--judgments: records lack {column!r}")
    if "judgment" in table.columns:
        table["score"] = table["judgment"].map(lambda text: mt_bench_metrics.parse_rating(_text(text)))
    elif "score" in table.columns:
        booleans = table["score"].map(lambda v: isinstance(v, bool))
        if booleans.any():
            row = int(booleans.idxmax())
            raise DataError(f"--judgments: record {row}: score {table['score'][row]!r} is not a number")
        scores = pd.to_numeric(table["score"], errors="coerce")
        if (table["score"].notna() & scores.isna()).any():
            row = int((table["score"].notna() & scores.isna()).idxmax())
            raise DataError(f"--judgments: record {row}: score {table['score'][row]!r} is not a number")
        table["score"] = scores.where(scores != -1)
    else:
        raise DataError("--judgments: records have neither 'judgment' nor 'score'")
    _check_records(table, path)
    # A rating outside MT-Bench's 1-10 scale is counted and left out, never averaged.
    out_of_range = table["score"].notna() & ~table["score"].between(1, 10)
    table["score"] = table["score"].where(~out_of_range)
    if "category" not in table.columns:
        if not questions:
            raise DataError("--questions: the judgments carry no category; give MT-Bench's question.jsonl")
        table["category"] = table["question_id"].map(_categories(questions))
        if table["category"].isna().any():
            raise DataError(f"--questions: {questions} lacks some judged question ids")

    def summary(group: pd.DataFrame) -> dict:
        return mt_bench_metrics.summarize(group) | {"n_out_of_range": int(out_of_range[group.index].sum())}

    if "model" in table.columns and table["model"].nunique() > 1:
        return {model: summary(group) for model, group in table.groupby("model", sort=True)}
    return summary(table)


def _judgment_records(path: Path) -> list[dict]:
    """The file's records, read as JSON (not through pandas, which turns ``true`` into 1 and
    keeps the last of two equal keys): each an object, its ``score`` a number or null."""
    records = []
    for number, record in json_lines(read_text(path, "--judgments", path), f"--judgments: {path}"):
        if not isinstance(record, dict):
            raise DataError(f"--judgments: {path} line {number} is a {type(record).__name__}, not a record")
        score = record.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise DataError(f"--judgments: {path} line {number}: score {score!r} is not a number")
        records.append(record)
    return records


def _check_records(table: pd.DataFrame, path: Path) -> None:
    """MT-Bench has two turns, and one judgment per model, question and turn: a third turn or a
    question judged twice (a judging run appended to its own file) would weigh into the mean."""
    turns = table["turn"]
    bad = turns.map(lambda v: isinstance(v, bool) or v not in (1, 2))
    if bad.any():
        row = int(bad.idxmax())
        turn = turns[row].item() if hasattr(turns[row], "item") else turns[row]  # not numpy's repr
        raise DataError(f"--judgments: record {row}: turn {turn!r} is not 1 or 2 (MT-Bench has two turns)")
    keys = [c for c in ("model", "judge", "question_id", "turn") if c in table.columns]
    hashable = table[keys].map(lambda v: json.dumps(v, sort_keys=True, default=str))
    repeated = hashable.duplicated(keep=False)
    if repeated.any():
        first = int(repeated.idxmax())
        count = int((hashable == hashable.iloc[first]).all(axis=1).sum())
        who = f"model {table['model'][first]!r}, " if "model" in table.columns else ""
        raise DataError(
            f"--judgments: {path}: {who}question {table['question_id'][first]} turn {table['turn'][first]} "
            f"is judged {count} times (records {first} and more); keep one judgment each"
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _categories(questions: str) -> dict:
    """question_id -> category from MT-Bench's question.jsonl, or one line naming what is wrong."""
    path = Path(questions)
    if not path.is_file():
        raise DataError(f"--questions: file not found: {questions}")
    categories = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"--questions: {questions} is not UTF-8 text") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            categories[record["question_id"]] = record["category"]
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"--questions: {questions} line {number} is not a question record "
                "(JSON with question_id and category)"
            ) from None
    return categories


def score_command(args: argparse.Namespace) -> str:
    if args.eval_command == "score-alpaca":
        result = score_alpaca(args.annotations, args.difficulty, args.cache_dir)
    else:
        result = score_mt_bench(args.judgments, args.questions)
    return json.dumps(_no_nan(result), indent=2, allow_nan=False)  # valid JSON: NaN is not


def _no_nan(value: object) -> object:
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value
