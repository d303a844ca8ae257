"""``tapir init``: an editable copy of a recipe tapir ships, so a run can start outside the clone."""

from __future__ import annotations

import argparse

from rich.console import Console


def register(sub: argparse._SubParsersAction) -> None:
    init = sub.add_parser("init", help="write an editable copy of a recipe tapir ships")
    init.add_argument(
        "name", nargs="?", default="default", help="default or paper-llama2-7b (default: %(default)s)"
    )
    init.add_argument(
        "--to", help="file to write (default: ./<name>.yaml); an existing file is never replaced"
    )


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    from tapir.recipe import init_recipe

    target = init_recipe(args.name, args.to)
    console.print(f"[green]wrote[/] {target}: edit it, then `tapir data --recipe {target}`")
    return 0
