"""``tapir distill``: the whole TAPIR loop, data then closed-loop training, with one engine per
model for the whole run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from tapir.commands.common import add_json, add_max_spend, add_recipe_args, emit, load
from tapir.commands.train import command_line


def register(sub: argparse._SubParsersAction) -> None:
    distill = sub.add_parser("distill", help="the whole TAPIR loop: data, then closed-loop training")
    add_recipe_args(distill)
    distill.add_argument("--output", help="output folder (overrides output_dir)")
    distill.add_argument("--dry-run", action="store_true", help="print both plans; load nothing")
    add_max_spend(distill)
    add_json(distill)


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    recipe = load(args)
    if args.dry_run:
        from tapir.pipelines.dry_run import dry_run
        from tapir.training.dry_run import train_dry_run

        train_plan = train_dry_run(recipe, console, True, command_line(args))
        data_plan = dry_run(recipe, console)
        return emit(distill_plan(data_plan, train_plan), as_json)
    distill(recipe, console, args.recipe)
    return 0


def distill(recipe: Any, console: Console, recipe_path: str | None) -> None:
    """Data, then the closed-loop rounds, with one engine per model for the whole run: the
    teacher's and judge's engines stay up through training, and each re-score (a child
    ``tapir data``) attaches to them through the engine registry instead of starting its own.
    The first pass's student engine is stopped before training (on a GPU node it holds the
    memory training needs) unless another role shares it (the embedded default)."""
    from tapir.pipelines.run import check_inputs, hold_pipeline_cache, run_data
    from tapir.serving.engines import EngineSet
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
    """Both plans, with each re-score's engine: a backend that holds whole devices (vLLM) serves
    each checkpoint in the student engine's turn (the first pass's engine stops before training,
    so one student engine holds the devices at a time); llama.cpp serves each checkpoint's GGUF
    as an engine of its own."""
    from tapir.serving.backends import backend_of
    from tapir.serving.engines import later_engine_plan

    engines = [dict(e) for e in data_plan["engines"]]
    student = next((e for e in engines if any(s.startswith("respond_student") for s in e["serves"])), None)
    for rescore in train_plan["rescore"]:
        entry = f"re-score after {rescore['after']} ({rescore['backend']}: {rescore['student']})"
        if not rescore["served"]:
            continue
        same_backend = student is not None and student["backend"] == rescore["backend"]
        if same_backend and backend_of(rescore["backend"]).holds_devices:
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
