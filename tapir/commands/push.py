"""``tapir push``: a curated dataset (all splits or one round), or a trained checkpoint with its
model card, to the Hugging Face Hub (or, with --dry-run, to a local folder)."""

from __future__ import annotations

import argparse

from rich.console import Console

from tapir.commands.common import add_recipe_args, load


def register(sub: argparse._SubParsersAction) -> None:
    hub = sub.add_parser(
        "push", help="push a curated dataset (all splits or one round) to the Hugging Face Hub"
    )
    add_recipe_args(hub)
    hub.add_argument("--repo-id", help="dataset repo org/name (default: hub.repo_id)")
    hub.add_argument("--round", dest="round_", help="'all', 'warmup' or a round number (default: hub.round)")
    hub.add_argument(
        "--model",
        metavar="ROUND|PATH",
        help="push a trained checkpoint instead (round_1, 1, warmup or a model folder), with a model "
        "card; --repo-id then names the model repo (default: hub.model_repo_id)",
    )
    visibility = hub.add_mutually_exclusive_group()
    visibility.add_argument(
        "--private", dest="private", action="store_true", default=None, help="private repo"
    )
    visibility.add_argument("--public", dest="private", action="store_false", help="public repo")
    hub.add_argument(
        "--dry-run", action="store_true", help="write exactly what would be uploaded to a local folder"
    )
    hub.add_argument("--to", help="folder for --dry-run (default: outputs/<name>-hub)")


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    recipe = load(args)
    if args.model is not None:  # '' is an error there, never the dataset push
        from tapir.publishing.model_push import push_model

        push_model(recipe, console, args.model, dry_run=args.dry_run, to=args.to, private=args.private)
        return 0
    from tapir.publishing.hub_push import push

    push(recipe, console, dry_run=args.dry_run, to=args.to, private=args.private)
    return 0
