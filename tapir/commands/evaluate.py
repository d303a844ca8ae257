"""``tapir eval``: AlpacaEval 2.0 and MT-Bench on every checkpoint; leaderboard, plots, HTML
report. Its sub-commands score stored judgments without a recipe."""

from __future__ import annotations

import argparse

from rich.console import Console

from tapir.commands.common import add_json, add_recipe_args, emit, load


def register(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "eval", help="AlpacaEval 2.0 + MT-Bench on every checkpoint; leaderboard, plots, HTML report"
    )
    add_recipe_args(evaluate)
    evaluate.add_argument(
        "--models", nargs="+", help="evaluate only these: round names, 'rounds', 'student', folders, Hub ids"
    )
    evaluate.add_argument(
        "--dry-run", action="store_true", help="check files, models and judge; load nothing"
    )
    add_json(evaluate)
    eval_sub = evaluate.add_subparsers(dest="eval_command")
    score_alpaca = eval_sub.add_parser(
        "score-alpaca", help="alpaca_eval's metrics for stored annotations, as one JSON object"
    )
    score_alpaca.add_argument("--annotations", required=True, help="alpaca_eval annotations.json")
    score_alpaca.add_argument(
        "--difficulty",
        help="instruction_difficulty.csv or df_gamed.csv, or a folder of annotation JSONs to estimate from "
        "(default: alpaca_eval downloads the official file)",
    )
    score_alpaca.add_argument("--cache-dir", default=".cache/tapir", help="where an estimate is cached")
    score_mt = eval_sub.add_parser(
        "score-mt-bench", help="per-turn, per-category and overall MT-Bench scores"
    )
    score_mt.add_argument("--judgments", required=True, help="fschat-style judgment JSONL (judgment texts)")
    score_mt.add_argument("--questions", help="question.jsonl, for records without a category")


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    if args.eval_command:
        from tapir.evaluation.scoring_cli import score_command

        print(score_command(args))
        return 0
    recipe = load(args)
    if args.dry_run:
        from tapir.evaluation.dry_run import eval_dry_run

        return emit(eval_dry_run(recipe, console, args.models), as_json)
    from tapir.evaluation.run import run_eval

    run_eval(recipe, console, args.models)
    return 0
