"""``tapir recipe``: validate a recipe and print it resolved; list every field."""

from __future__ import annotations

import argparse

from rich.console import Console

from tapir.commands.common import add_recipe_args, load


def register(sub: argparse._SubParsersAction) -> None:
    recipe = sub.add_parser("recipe", help="inspect recipes")
    recipe_sub = recipe.add_subparsers(dest="recipe_command", required=True)
    validate = recipe_sub.add_parser("validate", help="validate a recipe and print it resolved")
    add_recipe_args(validate)
    recipe_sub.add_parser("fields", help="list every recipe field with its default and meaning")


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    if args.recipe_command == "fields":
        from tapir.recipe import field_reference

        for name, default, description in field_reference():
            console.print(
                f"[cyan]{name}[/] = {default}  {description}"
                if default
                else f"[bold]{name}[/]  {description}"
            )
        return 0
    import yaml

    recipe = load(args)
    console.print(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    console.print(f"[green]valid[/] (hash {recipe.fingerprint()})")
    return 0
