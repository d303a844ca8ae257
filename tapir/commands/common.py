"""What every verb's parser shares: the recipe and its overrides, the spend cap, the JSON plan."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tapir.errors import RecipeError


def add_recipe_args(parser: argparse.ArgumentParser, default: str | None = "default") -> None:
    parser.add_argument(
        "--recipe",
        "-r",
        default=default,
        help="recipe YAML file, or a shipped one by name: default, paper-llama2-7b (default: %(default)s)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set judge.model=gpt-4o (repeatable)",
    )


def add_max_spend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-spend",
        type=float,
        metavar="USD",
        help="spend cap for the data run (pipeline.max_spend_usd): refuse a plan whose upper bound "
        "exceeds it; stop asking once the run has spent it",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="with --dry-run: print the plan (engines, calls) as JSON only"
    )


def emit(plan: dict[str, Any], as_json: bool) -> int:
    """A dry run's plan: already printed as tables, or (``--json``) as the only output."""
    if as_json:
        print(json.dumps(plan, indent=2, default=str))
    return 0


def load(args: argparse.Namespace) -> Any:
    """The recipe with the command line's overrides (flags are recipe fields under other names)."""
    from tapir.recipe import load_recipe

    overrides = list(args.overrides)
    for flag in ("output", "repo_id", "to"):
        value = getattr(args, flag, None)
        if value is not None and not value.strip():
            raise RecipeError(
                f"--{flag.replace('_', '-')}: empty; name a {'repo' if flag == 'repo_id' else 'folder'}"
            )
    if getattr(args, "output", None):
        overrides.append(f"output_dir={args.output}")
    if getattr(args, "round_", None) is not None:
        section = "hub" if args.command == "push" else "review"
        overrides.append(f"{section}.round={args.round_}")  # validated by the schema like the file
    if getattr(args, "sample_size", None) is not None:
        overrides.append(f"review.sample_size={args.sample_size}")
    if getattr(args, "repo_id", None):
        field = "model_repo_id" if getattr(args, "model", None) else "repo_id"
        overrides.append(f"hub.{field}={args.repo_id}")
    if getattr(args, "max_spend", None) is not None:
        overrides.append(f"pipeline.max_spend_usd={args.max_spend}")
    return load_recipe(args.recipe, overrides)
