"""``tapir review``: human spot-checks of a curated round in Argilla (push a sample, pull the
answers back)."""

from __future__ import annotations

import argparse

from rich.console import Console

from tapir.commands.common import add_recipe_args, load


def register(sub: argparse._SubParsersAction) -> None:
    review = sub.add_parser("review", help="human spot-checks of a curated round in Argilla")
    review_sub = review.add_subparsers(dest="review_command", required=True)
    review_push = review_sub.add_parser(
        "push", help="send a stratified sample of a round (task x difficulty) to Argilla"
    )
    add_recipe_args(review_push)
    review_push.add_argument(
        "--round", dest="round_", help="round number or 'warmup' (default: review.round)"
    )
    review_push.add_argument("--sample-size", type=int, help="records to send (default: review.sample_size)")
    review_push.add_argument(
        "--dry-run", action="store_true", help="build the records and print the sample; send nothing"
    )
    review_pull = review_sub.add_parser(
        "pull", help="read reviewers' answers back: decisions for the next `tapir data` + agreement report"
    )
    add_recipe_args(review_pull)
    review_pull.add_argument(
        "--round", dest="round_", help="round number or 'warmup' (default: review.round)"
    )


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    from tapir.review.spot_check import pull_review, push_review

    recipe = load(args)
    if args.review_command == "push":
        push_review(recipe, console, dry_run=args.dry_run)
    else:
        pull_review(recipe, console)
    return 0
