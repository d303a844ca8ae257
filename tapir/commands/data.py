"""``tapir data``: the TAPIR data pipeline, writing the curriculum datasets."""

from __future__ import annotations

import argparse

from rich.console import Console

from tapir.commands.common import add_json, add_max_spend, add_recipe_args, emit, load


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="run the TAPIR data pipeline and write the curriculum datasets")
    add_recipe_args(data)
    data.add_argument("--output", help="output folder (overrides output_dir)")
    data.add_argument(
        "--reask-unparsed",
        action="store_true",
        help="ask again the cached answers that failed to parse (failed calls are always re-asked)",
    )
    data.add_argument(
        "--dry-run", action="store_true", help="validate and print the plan; load and call nothing"
    )
    add_max_spend(data)
    add_json(data)


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    recipe = load(args)
    if args.dry_run:
        from tapir.pipelines.dry_run import dry_run

        return emit(dry_run(recipe, console), as_json)
    from tapir.pipelines.run import run_data

    run_data(recipe, console, recipe_path=args.recipe, reask_unparsed=args.reask_unparsed)
    return 0
