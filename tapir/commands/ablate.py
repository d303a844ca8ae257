"""``tapir ablate``: what each part of TAPIR buys, at equal training budget.

Arms (one recipe each, all under ``<output_dir>-ablate/``):

- ``tapir``: the recipe as it is;
- ``random``: as many rows as TAPIR's curriculum, drawn at random from the same graded pool,
  with the teacher's own answers (no MFD selection, no re-balancing, no refinement), one round;
- ``no_rebalance``, ``no_refine``: the recipe with that step off, its own data pass (the response
  cache answers every call the arms share, so an arm costs only what differs);
- ``no_curriculum``: TAPIR's own examples, shuffled into one round.

Every arm trains the same number of optimizer steps at the same batch size, so each sees the
same number of examples: a curriculum arm ``max_steps`` per round, a one-round arm that times
its rounds. Arms differ in data only: each trains a fixed curriculum from its data pass
(``training.mfd_student: base``, no closed loop). One ``tapir eval`` then scores every arm's
last checkpoint (and the untrained student) on the same benchmarks with the same judge, and the
ablation table, plot and report section are drawn from that leaderboard.
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tapir.commands.common import add_json, add_recipe_args, emit, load
from tapir.errors import RecipeError
from tapir.manifest import sha256_file
from tapir.recipe import Recipe, recipe_from_dict
from tapir.stage_contract import (
    WARMUP,
    DataManifest,
    DataRun,
    data_settings,
    header,
    round_split,
    write_manifest,
)

ARMS = ("tapir", "random", "no_rebalance", "no_refine", "no_curriculum")
WHAT = {
    "tapir": "the recipe as it is",
    "random": "as many rows as TAPIR's, drawn at random from the graded pool, teacher answers, one round",
    "no_rebalance": "rebalance.enabled: false",
    "no_refine": "refinement.enabled: false (the teacher's first answers)",
    "no_curriculum": "TAPIR's examples shuffled into one round",
}
OWN_DATA_PASS = {"tapir": {}, "no_rebalance": {"rebalance": {"enabled": False}}}
OWN_DATA_PASS["no_refine"] = {"refinement": {"enabled": False}}
#: Arms built from the tapir arm's data folder, without a data pass of their own.
FROM_TAPIR = ("random", "no_curriculum")


@dataclass(frozen=True)
class Budget:
    """Optimizer steps per curriculum round and in all (a one-round arm trains ``total``)."""

    per_round: int
    rounds: int  # the curriculum's rounds, warm-up included

    @property
    def total(self) -> int:
        return self.per_round * self.rounds


def workspace(recipe: Recipe) -> Path:
    data = recipe.resolved_output_dir
    return data.parent / f"{data.name}-ablate"


def chosen_arms(names: list[str] | None) -> list[str]:
    arms = list(names or ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise RecipeError(f"--arms: unknown arm(s) {unknown}; choose from {list(ARMS)}")
    if any(a in FROM_TAPIR for a in arms) and "tapir" not in arms:
        arms.insert(0, "tapir")  # random and no_curriculum are drawn from its data
    return [a for a in ARMS if a in arms]


def budget(recipe: Recipe, tapir_sizes: list[int] | None = None) -> Budget | None:
    """Steps per round: ``training.max_steps``, else what the tapir arm's average round takes at the
    recipe's epochs (its sizes from ``curriculum.round_size(s)``, else from its data pass:
    ``tapir_sizes``; None until then)."""
    warmup = recipe.training.warmup_round and recipe.curriculum.warmup_size > 0
    rounds = recipe.curriculum.rounds + (1 if warmup else 0)
    if recipe.training.max_steps:
        return Budget(recipe.training.max_steps, rounds)
    sizes = recipe.curriculum.round_sizes or (
        [recipe.curriculum.round_size] * recipe.curriculum.rounds if recipe.curriculum.round_size else None
    )
    sizes = sizes or tapir_sizes
    if not sizes:
        return None
    batch = recipe.training.per_device_train_batch_size * recipe.training.gradient_accumulation_steps
    per_round = math.ceil(math.ceil(sum(sizes) / len(sizes) / batch) * recipe.training.num_train_epochs)
    return Budget(max(1, per_round), rounds)


def arm_recipe(recipe: Recipe, arm: str, steps: Budget | None, root: Path) -> Recipe:
    """The arm's recipe: its own data and checkpoint folders, the shared eval folder, the budget."""
    data = recipe.model_dump(mode="json")
    for section, values in OWN_DATA_PASS.get(arm, {}).items():
        data[section] = {**data[section], **values}
    data["name"] = f"{recipe.name}-{arm}"
    data["output_dir"] = str(root / arm)
    data["training"] = {
        **data["training"],
        "output_dir": str(root / f"{arm}-checkpoints"),
        "mfd_student": "base",
        "closed_loop": False,
        "max_steps": steps.per_round if steps else None,
    }
    data["evaluation"] = {**data["evaluation"], "output_dir": str(root / "eval")}
    data["review"] = {**data["review"], "output_dir": str(root / "review")}
    data["hub"] = {**data["hub"], "output_dir": str(root / "hub")}
    if arm in FROM_TAPIR:
        share = recipe.curriculum.hard_share[-1]
        data["curriculum"] = {
            **data["curriculum"],
            "rounds": 1,
            "hard_share": [share],
            "round_size": None,
            "round_sizes": None,
            "warmup_size": 0,
        }
        data["training"] = {
            **data["training"],
            "warmup_round": False,
            "max_steps": steps.total if steps else None,
        }
    return recipe_from_dict(data, f"ablation arm {arm}")


def curriculum_rows(run: DataRun, recipe: Recipe) -> list[dict[str, Any]]:
    """Every training example of a data run, warm-up and rounds, in split order."""
    import datasets

    rows: list[dict[str, Any]] = []
    splits = [WARMUP, *[round_split(r) for r in range(1, recipe.curriculum.rounds + 1)]]
    for split in splits:
        path = run.split_file(split)
        if path.is_file():
            table = datasets.load_dataset("parquet", data_files=str(path), split="train")
            rows += [dict(r) for r in table if r.get("messages")]
    return rows


def round_sizes(run: DataRun, recipe: Recipe) -> list[int]:
    """Rows of each curriculum round (warm-up left out) of a finished data run."""
    from tapir.training.round_data import parquet_rows

    sizes = [parquet_rows(run.split_file(round_split(r))) for r in range(1, recipe.curriculum.rounds + 1)]
    return [s or 0 for s in sizes]


def graded_pool(run: DataRun) -> list[dict[str, Any]]:
    import datasets

    table = datasets.load_dataset("parquet", data_files=str(run.data_dir / "pool.parquet"), split="train")
    return [dict(r) for r in table if r.get("difficulty") in ("hard", "easy") and r.get("teacher_response")]


def random_rows(pool: list[dict[str, Any]], size: int, seed: int, user_template: str) -> list[dict[str, Any]]:
    """``size`` rows drawn at random from the graded pool (without replacement while it lasts),
    as training examples with the teacher's own answer."""
    from tapir.pipelines.prompts import render

    rng = random.Random(seed)
    drawn: list[dict[str, Any]] = []
    while len(drawn) < size and pool:
        drawn += rng.sample(pool, min(len(pool), size - len(drawn)))
    out = []
    for row in drawn:
        user = render(user_template, instruction=row["instruction"], input=row.get("input") or "")
        out.append(
            {
                "id": row["id"],
                "instruction": row["instruction"],
                "task": row.get("task"),
                "difficulty": row.get("difficulty"),
                "response_source": "teacher",
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": row["teacher_response"]},
                ],
            }
        )
    return out


def write_one_round(
    folder: Path, arm: Recipe, rows: list[dict[str, Any]], seed: int, made_from: Path
) -> Path:
    """A data folder with one shuffled round, shaped as ``tapir data`` leaves one (manifest and
    all), so ``tapir train`` reads it like any other."""
    import datasets

    from tapir.staging import atomic_folder, claim_output, mark_output

    claim_output(folder, "data", "output_dir")
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    slim = [{"messages": r["messages"], "id": r["id"], "task": r.get("task")} for r in shuffled]
    with atomic_folder(folder) as staging:
        run = DataRun(staging)
        run.data_dir.mkdir(parents=True, exist_ok=True)
        round_file = run.split_file(round_split(1))
        datasets.Dataset.from_list(slim).to_parquet(str(round_file))
        manifest = DataManifest(
            **header("data", arm, None),
            seed=arm.seed,
            data_settings=data_settings(arm),
            files={
                "made_from": {"path": str(made_from)},
                # as `tapir data` records its rounds: training checks the file against it
                run.relative(round_split(1)): {"rows": len(slim), "sha256": sha256_file(round_file)},
            },
        )
        write_manifest(staging, manifest)
        mark_output(staging, "data")
    return folder


def plan_table(
    recipe: Recipe, arms: list[str], steps: Budget | None, calls: dict[str, int] | None = None
) -> Table:
    table = Table(title=f"tapir ablate {recipe.name}: arms at equal budget", title_justify="left")
    columns = ["arm", "what differs", "data", "rounds", "optimizer steps"]
    for column in columns + (["LLM calls it adds (upper bound)"] if calls is not None else []):
        table.add_column(column)
    for arm in arms:
        data = "built from the tapir arm's data" if arm in FROM_TAPIR else "its own data pass"
        rounds = "1" if arm in FROM_TAPIR else "warm-up + rounds" if steps is None else str(steps.rounds)
        if steps is None:
            per = "equal: from the tapir arm's rounds, after its data pass"
        else:
            per = (
                str(steps.total)
                if arm in FROM_TAPIR
                else f"{steps.per_round} per round, {steps.total} in all"
            )
        extra = [f"{calls[arm]:,}"] if calls is not None else []
        table.add_row(arm, WHAT[arm], data, rounds, per, *extra)
    return table


def print_plan(console: Console, recipe: Recipe, arms: list[str], steps: Budget | None) -> None:
    console.print(plan_table(recipe, arms, steps))
    console.print(
        f"workspace: {workspace(recipe)}; one `tapir eval` of every arm into {workspace(recipe) / 'eval'}"
    )


def last_round(arm: Recipe) -> str:
    return round_split(arm.curriculum.rounds)


def eval_recipe(recipe: Recipe, arms: dict[str, Recipe], root: Path) -> Recipe:
    """The tapir arm's recipe evaluating the untrained student and every arm's last checkpoint."""
    from tapir.stage_contract import TrainRun

    models = ["student"] + [
        f"{arm}={TrainRun(spec.resolved_train_dir).model_dir(last_round(spec))}" for arm, spec in arms.items()
    ]
    data = arms["tapir"].model_dump(mode="json") if "tapir" in arms else recipe.model_dump(mode="json")
    data["evaluation"] = {
        **data["evaluation"],
        "models": models,
        "baselines": [],
        "output_dir": str(root / "eval"),
    }
    return recipe_from_dict(data, "ablation eval")


def run_ablation(recipe: Recipe, console: Console, arms: list[str], recipe_path: str | None = None) -> Path:
    """Data for every arm, then training, then one evaluation; returns the workspace."""
    from tapir.evaluation.ablation_report import write_ablation_report
    from tapir.evaluation.run import run_eval
    from tapir.pipelines.prompts import template_text
    from tapir.pipelines.run import run_data
    from tapir.serving.engines import EngineSet
    from tapir.training.rounds import run_training

    root = workspace(recipe)
    steps = budget(recipe)
    recipes = {arm: arm_recipe(recipe, arm, steps, root) for arm in arms}
    print_plan(console, recipe, arms, steps)
    root.mkdir(parents=True, exist_ok=True)
    log_dir = root / "logs"
    log_dir.mkdir(exist_ok=True)
    with EngineSet.for_recipe(recipe, log_dir) as engines:
        for arm in arms:
            if arm not in FROM_TAPIR:
                console.rule(f"ablation arm {arm}: data")
                run_data(recipes[arm], console, recipe_path=recipe_path, engines=engines)
    tapir_run = DataRun(recipes["tapir"].resolved_output_dir)
    if steps is None:
        steps = budget(recipe, round_sizes(tapir_run, recipes["tapir"]))
        assert steps is not None
        recipes = {arm: arm_recipe(recipe, arm, steps, root) for arm in arms}
        console.print(f"training budget: {steps.per_round} steps per round, {steps.total} in all, every arm")
    examples = curriculum_rows(tapir_run, recipes["tapir"])
    for arm in arms:
        if arm == "random":
            rows = random_rows(graded_pool(tapir_run), len(examples), recipe.seed, template_text("respond"))
        elif arm == "no_curriculum":
            rows = examples
        else:
            continue
        write_one_round(recipes[arm].resolved_output_dir, recipes[arm], rows, recipe.seed, tapir_run.root)
        console.print(f"ablation arm {arm}: {len(rows)} examples, one round ({WHAT[arm]})")
    for arm in arms:
        console.rule(f"ablation arm {arm}: training")
        run_training(recipes[arm], console, recipe_path=recipe_path, closed_loop=False)
    console.rule("ablation: evaluation")
    judged = eval_recipe(recipe, recipes, root)
    eval_dir = run_eval(judged, console)
    write_ablation_report(eval_dir, root, {arm: WHAT[arm] for arm in arms}, steps.total, console)
    return root


def ablation_dry_run(recipe: Recipe, console: Console, arms: list[str]) -> dict[str, Any]:
    """The arms, their budget and an upper bound of the LLM calls each adds; loads and calls nothing."""
    from tapir.evaluation.dry_run import eval_dry_run
    from tapir.pipelines.dry_run import dry_run as data_dry_run

    root = workspace(recipe)
    steps = budget(recipe)
    recipes = {arm: arm_recipe(recipe, arm, steps, root) for arm in arms}
    quiet = Console(quiet=True)
    data = data_dry_run(recipes["tapir"], quiet)
    refinements = sum(
        int(str(step).rsplit("(", 1)[-1].rstrip(")"))
        for role in data["roles"].values()
        for step in role.get("steps", [])
        if str(step).startswith("refine_responses")
    )
    # The response cache answers every call an arm shares with the tapir arm: no_rebalance adds
    # at most the refinements of rows the tapir arm did not select; the others add none.
    calls = {arm: 0 for arm in arms}
    calls["tapir"] = int(data["estimate"]["calls"])
    if "no_rebalance" in calls:
        calls["no_rebalance"] = refinements
    settings = recipe.evaluation
    per_model = 0
    if settings.alpaca_eval.enabled:
        per_model += 2 * (settings.alpaca_eval.limit or 805)  # answers and verdicts
    if settings.mt_bench.enabled:
        per_model += 2 * 2 * 8 * (settings.mt_bench.per_category or 10)  # two turns, answers and grades
    evaluated = eval_recipe(recipe, recipes, root)
    eval_dry_run(evaluated, quiet, ["student"])  # benchmark files, judge and student are checked
    eval_calls = per_model * (1 + len(arms))
    console.print(plan_table(recipe, arms, steps, calls))
    console.print(
        f"evaluation: the untrained student and {len(arms)} arms' last checkpoints, at most {eval_calls:,} "
        f"calls (answers and judge verdicts); workspace {root}"
    )
    console.print("[green]ablation plan is valid[/] (nothing was loaded, trained or called)")
    return {
        "stage": "ablate",
        "recipe": recipe.name,
        "workspace": str(root),
        "arms": {arm: {"what": WHAT[arm], "calls_upper_bound": calls[arm]} for arm in arms},
        "steps": None
        if steps is None
        else {"per_round": steps.per_round, "total": steps.total, "curriculum_rounds": steps.rounds},
        "evaluation_calls_upper_bound": eval_calls,
    }


def register(sub: argparse._SubParsersAction) -> None:
    ablate = sub.add_parser(
        "ablate", help="TAPIR against random selection and each step switched off, at equal budget"
    )
    add_recipe_args(ablate)
    ablate.add_argument("--arms", nargs="+", help="arms to run (default: all): tapir random no_rebalance ...")
    ablate.add_argument(
        "--dry-run", action="store_true", help="print the arms, budget and calls; run nothing"
    )
    add_json(ablate)


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    recipe = load(args)
    arms = chosen_arms(args.arms)
    if args.dry_run:
        return emit(ablation_dry_run(recipe, console, arms), as_json)
    run_ablation(recipe, console, arms, recipe_path=args.recipe)
    return 0
