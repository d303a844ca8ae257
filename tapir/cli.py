"""The ``tapir`` command: the user's verbs, each reading one recipe.

User errors (bad recipe, missing file, unreachable endpoint) print one line naming the field
or file and exit with status 2; no traceback, no half-written output.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from rich.console import Console

from tapir import __version__
from tapir.errors import TapirError
from tapir.lifeline import children_die_with_this_process
from tapir.redaction import scrub_standard_streams
from tapir.run_lock import release_all
from tapir.scratch import private_tmp

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _add_recipe_args(parser: argparse.ArgumentParser, default: str | None = "default") -> None:
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


def _add_max_spend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-spend",
        type=float,
        metavar="USD",
        help="spend cap for the data run (pipeline.max_spend_usd): refuse a plan whose upper bound "
        "exceeds it; stop asking once the run has spent it",
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="with --dry-run: print the plan (engines, calls) as JSON only"
    )


def _emit(plan: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(plan, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tapir", description="TAPIR distillation: data, train, eval.")
    parser.add_argument("--version", action="version", version=f"tapir {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="run the TAPIR data pipeline and write the curriculum datasets")
    _add_recipe_args(data)
    data.add_argument("--output", help="output folder (overrides output_dir)")
    data.add_argument(
        "--reask-unparsed",
        action="store_true",
        help="ask again the cached answers that failed to parse (failed calls are always re-asked)",
    )
    data.add_argument(
        "--dry-run", action="store_true", help="validate and print the plan; load and call nothing"
    )
    _add_max_spend(data)
    _add_json(data)

    train = sub.add_parser("train", help="train the student on the curriculum, round by round (resumable)")
    _add_recipe_args(train)
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
    train.add_argument("--dry-run", action="store_true", help="print the training plan; load nothing")
    _add_json(train)

    distill = sub.add_parser("distill", help="the whole TAPIR loop: data, then closed-loop training")
    _add_recipe_args(distill)
    distill.add_argument("--output", help="output folder (overrides output_dir)")
    distill.add_argument("--dry-run", action="store_true", help="print both plans; load nothing")
    _add_max_spend(distill)
    _add_json(distill)

    ablate = sub.add_parser(
        "ablate", help="TAPIR against random selection and each step switched off, at equal budget"
    )
    _add_recipe_args(ablate)
    ablate.add_argument("--arms", nargs="+", help="arms to run (default: all): tapir random no_rebalance ...")
    ablate.add_argument(
        "--dry-run", action="store_true", help="print the arms, budget and calls; run nothing"
    )
    _add_json(ablate)

    evaluate = sub.add_parser(
        "eval", help="AlpacaEval 2.0 + MT-Bench on every checkpoint; leaderboard, plots, HTML report"
    )
    _add_recipe_args(evaluate)
    evaluate.add_argument(
        "--models", nargs="+", help="evaluate only these: round names, 'rounds', 'student', folders, Hub ids"
    )
    evaluate.add_argument(
        "--dry-run", action="store_true", help="check files, models and judge; load nothing"
    )
    _add_json(evaluate)
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

    review = sub.add_parser("review", help="human spot-checks of a curated round in Argilla")
    review_sub = review.add_subparsers(dest="review_command", required=True)
    review_push = review_sub.add_parser(
        "push", help="send a stratified sample of a round (task x difficulty) to Argilla"
    )
    _add_recipe_args(review_push)
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
    _add_recipe_args(review_pull)
    review_pull.add_argument(
        "--round", dest="round_", help="round number or 'warmup' (default: review.round)"
    )

    hub = sub.add_parser(
        "push", help="push a curated dataset (all splits or one round) to the Hugging Face Hub"
    )
    _add_recipe_args(hub)
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

    recipe = sub.add_parser("recipe", help="inspect recipes")
    recipe_sub = recipe.add_subparsers(dest="recipe_command", required=True)
    validate = recipe_sub.add_parser("validate", help="validate a recipe and print it resolved")
    _add_recipe_args(validate)
    recipe_sub.add_parser("fields", help="list every recipe field with its default and meaning")

    init = sub.add_parser("init", help="write an editable copy of a recipe tapir ships")
    init.add_argument(
        "name", nargs="?", default="default", help="default or paper-llama2-7b (default: %(default)s)"
    )
    init.add_argument(
        "--to", help="file to write (default: ./<name>.yaml); an existing file is never replaced"
    )
    return parser


def _load(args: argparse.Namespace):
    from tapir.recipe import load_recipe

    overrides = list(args.overrides)
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


#: Width of tables written to a pipe or file: rich would assume 80 columns and cut names short.
PIPED_WIDTH = 200


def _piped_width() -> int | None:
    """None on a terminal (rich measures it); else $COLUMNS or a width no table is cut at."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else PIPED_WIDTH


def _quiet_libraries() -> None:
    # datasets' "Generating train split" bars (distilabel builds its result with them) would come
    # between tapir's own tables; its workers inherit the setting
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    for name in ("httpx", "datasets", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False) and getattr(args, "dry_run", False))
    console = Console(stderr=False, quiet=as_json, width=_piped_width())
    _quiet_libraries()
    if args.command == "init":
        from tapir.recipe import init_recipe

        target = init_recipe(args.name, args.to)
        console.print(f"[green]wrote[/] {target}: edit it, then `tapir data --recipe {target}`")
        return 0
    if args.command == "recipe" and args.recipe_command == "fields":
        from tapir.recipe import field_reference

        for name, default, description in field_reference():
            console.print(
                f"[cyan]{name}[/] = {default}  {description}"
                if default
                else f"[bold]{name}[/]  {description}"
            )
        return 0
    if args.command == "eval" and args.eval_command:
        from tapir.evaluation.scoring_cli import score_command

        print(score_command(args))
        return 0
    recipe = _load(args)
    if args.command == "eval":
        if args.dry_run:
            from tapir.evaluation.dry_run import eval_dry_run

            return _emit(eval_dry_run(recipe, console, args.models), as_json)
        from tapir.evaluation.run import run_eval

        run_eval(recipe, console, args.models)
        return 0
    if args.command == "ablate":
        from tapir.ablation import ablation_dry_run, chosen_arms, run_ablation

        arms = chosen_arms(args.arms)
        if args.dry_run:
            return _emit(ablation_dry_run(recipe, console, arms), as_json)
        run_ablation(recipe, console, arms, recipe_path=args.recipe)
        return 0
    if args.command == "review":
        from tapir.review.spot_check import pull_review, push_review

        if args.review_command == "push":
            push_review(recipe, console, dry_run=args.dry_run)
        else:
            pull_review(recipe, console)
        return 0
    if args.command == "push":
        if args.model:
            from tapir.publishing.model_push import push_model

            push_model(recipe, console, args.model, dry_run=args.dry_run, to=args.to, private=args.private)
            return 0
        from tapir.publishing.hub_push import push

        push(recipe, console, dry_run=args.dry_run, to=args.to, private=args.private)
        return 0
    if args.command == "recipe":
        import yaml

        console.print(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        console.print(f"[green]valid[/] (hash {recipe.fingerprint()})")
        return 0
    if args.command == "data":
        if args.dry_run:
            from tapir.pipelines.dry_run import dry_run

            return _emit(dry_run(recipe, console), as_json)
        from tapir.pipelines.run import run_data

        run_data(recipe, console, recipe_path=args.recipe, reask_unparsed=args.reask_unparsed)
        return 0
    if args.command in ("train", "distill"):
        closed_loop = True if args.command == "distill" else args.closed_loop
        if args.dry_run:
            from tapir.training.dry_run import train_dry_run

            train_plan = train_dry_run(recipe, console, closed_loop, _train_command_line(args))
            if args.command == "train":
                return _emit(train_plan, as_json)
            from tapir.pipelines.dry_run import dry_run

            data_plan = dry_run(recipe, console)
            return _emit(distill_plan(data_plan, train_plan), as_json)
        from tapir.training.rounds import run_training

        if args.command == "distill":
            _distill(recipe, console, args.recipe)
        elif getattr(args, "machine_rank", 0):
            from tapir.training.follower import follow_machine_zero

            follow_machine_zero(recipe, console, args.machine_rank)
        else:
            run_training(
                recipe,
                console,
                recipe_path=args.recipe,
                closed_loop=closed_loop,
                allow_stale_data=args.allow_stale_data,
            )
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _train_command_line(args: argparse.Namespace) -> list[str]:
    """``tapir train`` with the recipe and overrides given: what every machine runs."""
    line = ["tapir", "train", "--recipe", args.recipe]
    for override in args.overrides:
        line += ["--set", override]
    if getattr(args, "output", None):
        line += ["--output", args.output]
    return line


def _distill(recipe, console, recipe_path: str | None) -> None:
    """Data, then the closed-loop rounds, with one engine per model for the whole run: the
    teacher's and judge's engines stay up through training, and each re-score (a child
    ``tapir data``) attaches to them through the engine registry instead of starting its own.
    The first pass's student engine is stopped before training (on a GPU node it holds the
    memory training needs) unless another role shares it (the embedded default)."""
    from tapir.engines import EngineSet
    from tapir.pipelines.run import check_inputs, hold_pipeline_cache, run_data
    from tapir.staging import claim_output, open_output
    from tapir.training.rounds import run_training

    claim_output(recipe.resolved_output_dir, "data", "output_dir")  # both, before anything is written
    claim_output(recipe.resolved_train_dir, "train", "training.output_dir")
    hold_pipeline_cache(recipe)  # for the whole loop: each re-score (a child) works under it
    check_inputs(recipe)  # a refused run writes nothing
    open_output(recipe.resolved_train_dir, "train")  # its logs/ are written from now on
    log_dir = recipe.resolved_train_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with EngineSet.for_recipe(recipe, log_dir) as engines:
        run_data(recipe, console, recipe_path=recipe_path, engines=engines)
        for engine in list(engines.engines.values()):
            if engine.serves and all(step.startswith("respond_student") for step in engine.serves):
                engines.release(engine)
        run_training(recipe, console, recipe_path=recipe_path, closed_loop=True)


def distill_plan(data_plan: dict, train_plan: dict) -> dict:
    """Both plans, with each re-score's engine: a vLLM student engine serves each checkpoint in
    its turn (the first pass's engine stops before training, so one student engine holds the
    devices at a time); llama.cpp serves each checkpoint's GGUF as an engine of its own."""
    from tapir.engines import later_engine_plan

    engines = [dict(e) for e in data_plan["engines"]]
    student = next((e for e in engines if any(s.startswith("respond_student") for s in e["serves"])), None)
    for rescore in train_plan["rescore"]:
        entry = f"re-score after {rescore['after']} ({rescore['backend']}: {rescore['student']})"
        if not rescore["served"]:
            continue
        if student is not None and student["backend"] == rescore["backend"] == "vllm":
            student["serves"] = [*student["serves"], entry]
            student.setdefault("then_serves_in_turn", []).append(rescore["student"])
        else:
            engines.append(
                later_engine_plan(
                    f"{rescore['backend']}:{rescore['after']}/{Path(rescore['student']).name}",
                    rescore["backend"],
                    rescore["student"],
                    [f"{step} (re-score after {rescore['after']})" for step in rescore["steps"]],
                )
            )
    return {**data_plan, "stage": "distill", "engines": engines, "training": train_plan}


def main(argv: list[str] | None = None) -> None:
    children_die_with_this_process()  # workers and engines end with tapir, even on SIGKILL
    scrub_standard_streams()  # no key the recipe names is ever printed, whoever prints it
    try:
        with private_tmp():  # temporary files of this command and its children go with it
            code = run(argv)
    except TapirError as error:
        print(f"tapir: error: {error}", file=sys.stderr)
        code = getattr(error, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("tapir: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        release_all()  # the locks on this command's outputs (the kernel would, at exit)
    sys.exit(code)


if __name__ == "__main__":
    main()
