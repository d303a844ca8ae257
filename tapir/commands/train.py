"""``tapir train``: the student on the curriculum, round by round (resumable)."""

from __future__ import annotations

import argparse

from rich.console import Console

from tapir.commands.common import add_json, add_recipe_args, emit, load


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train the student on the curriculum, round by round (resumable)")
    add_recipe_args(train)
    train.add_argument("--output", help="data folder to read (overrides output_dir)")
    train.add_argument(
        "--closed-loop",
        action="store_true",
        default=None,
        help="re-score with each new checkpoint and build the next round from what is still hard",
    )
    train.add_argument(
        "--allow-stale-data",
        action="store_true",
        help="train on a data run made with other data-side settings than the recipe has now",
    )
    train.add_argument(
        "--machine-rank",
        type=int,
        default=0,
        help="on machine N > 0 of a multi-machine accelerate config: start this machine's ranks for "
        "each round machine 0's `tapir train` launches (shared filesystem)",
    )
    train.add_argument(
        "--wait-s",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="with --machine-rank: how long to wait for machine 0's run to start, or to show it is "
        "alive again, before giving up with one line (default: %(default)s)",
    )
    train.add_argument("--dry-run", action="store_true", help="print the training plan; load nothing")
    add_json(train)


def command_line(args: argparse.Namespace) -> list[str]:
    """``tapir train`` with the recipe and overrides given: what every machine runs."""
    line = ["tapir", "train", "--recipe", args.recipe]
    for override in args.overrides:
        line += ["--set", override]
    if getattr(args, "output", None):
        line += ["--output", args.output]
    return line


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    recipe = load(args)
    if args.dry_run:
        from tapir.training.dry_run import train_dry_run

        return emit(train_dry_run(recipe, console, args.closed_loop, command_line(args)), as_json)
    if args.machine_rank:
        from tapir.training.follower import follow_machine_zero

        follow_machine_zero(recipe, console, args.machine_rank, wait_s=args.wait_s)
        return 0
    from tapir.training.rounds import run_training

    run_training(
        recipe,
        console,
        recipe_path=args.recipe,
        closed_loop=args.closed_loop,
        allow_stale_data=args.allow_stale_data,
    )
    return 0
