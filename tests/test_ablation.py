"""`tapir ablate`: the arms' recipes differ only where they should, every arm gets the same
optimizer steps, random and one-round arms are built from the tapir arm's data, and (e2e) the whole
ablation runs through data, training and one evaluation into a table, a plot and a report section."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tapir.commands.ablate import (
    ARMS,
    Budget,
    arm_recipe,
    budget,
    chosen_arms,
    random_rows,
    workspace,
)
from tapir.errors import RecipeError
from tapir.recipe import recipe_from_dict

from .conftest import make_recipe
from .tiny_student import build_tiny_student


def base_recipe(tmp_path, **training):
    return recipe_from_dict(
        {
            "name": "abl",
            "output_dir": str(tmp_path / "out"),
            "curriculum": {"rounds": 3, "hard_share": [0.3, 0.6, 0.9], "warmup_size": 4},
            "training": {"per_device_train_batch_size": 2, **training},
        }
    )


def test_arms_are_named_and_random_brings_the_tapir_arm():
    assert chosen_arms(None) == list(ARMS)
    assert chosen_arms(["random"]) == ["tapir", "random"]
    with pytest.raises(RecipeError, match=r"^--arms: unknown arm\(s\) \['lucky'\]"):
        chosen_arms(["lucky"])


def test_every_arm_trains_the_same_steps_and_differs_only_where_it_should(tmp_path):
    recipe = base_recipe(tmp_path, max_steps=5, mfd_student="warmed_up", closed_loop=True)
    steps = budget(recipe)
    assert steps == Budget(5, 4) and steps.total == 20  # warm-up + 3 rounds
    root = workspace(recipe)
    arms = {arm: arm_recipe(recipe, arm, steps, root) for arm in ARMS}
    for arm, spec in arms.items():
        assert spec.resolved_output_dir == root / arm
        assert spec.resolved_train_dir == root / f"{arm}-checkpoints"
        assert spec.resolved_eval_dir == root / "eval"  # one evaluation of every arm
        assert spec.training.mfd_student == "base" and not spec.training.closed_loop
    total = {
        arm: spec.training.max_steps * (spec.curriculum.rounds + int(spec.training.warmup_round))
        for arm, spec in arms.items()
    }
    assert set(total.values()) == {20}
    assert not arms["no_rebalance"].rebalance.enabled and arms["no_rebalance"].refinement.enabled
    assert not arms["no_refine"].refinement.enabled and arms["no_refine"].rebalance.enabled
    for one_round in ("random", "no_curriculum"):
        assert arms[one_round].curriculum.rounds == 1 and not arms[one_round].training.warmup_round
    # the arms' data-side settings equal the recipe's except the step they switch off
    same = {
        k: v for k, v in arms["tapir"].model_dump().items() if k not in ("name", "output_dir", "training")
    }
    for arm in ("no_rebalance", "no_refine"):
        other = arms[arm].model_dump()
        differs = sorted(
            k for k, v in same.items() if other[k] != v and k not in ("evaluation", "review", "hub")
        )
        assert differs == [{"no_rebalance": "rebalance", "no_refine": "refinement"}[arm]]


def test_budget_follows_round_sizes_or_waits_for_the_tapir_data(tmp_path):
    sized = recipe_from_dict(
        {
            "name": "abl",
            "curriculum": {"rounds": 2, "hard_share": [0.5, 0.5], "round_sizes": [6, 10], "warmup_size": 0},
            "training": {"per_device_train_batch_size": 2, "num_train_epochs": 2},
        }
    )
    assert budget(sized) == Budget(8, 2)  # average round of 8 rows, batch 2, 2 epochs
    unsized = base_recipe(tmp_path)
    assert budget(unsized) is None
    assert budget(unsized, [4, 4, 2]) == Budget(6, 4)  # ceil(10 / 3 / 2) = 2 batches x 3 epochs


def test_random_rows_draw_the_teacher_answer_without_repeats_while_the_pool_lasts():
    pool = [
        {"id": f"r{i}", "instruction": f"q{i}", "teacher_response": f"a{i}", "difficulty": "easy"}
        for i in range(5)
    ]
    rows = random_rows(pool, 7, seed=1, user_template="{{ instruction }}")
    assert len(rows) == 7 and len({r["id"] for r in rows[:5]}) == 5
    assert all(r["messages"][1]["content"] == "a" + r["id"][1:] for r in rows)
    assert all(r["messages"][0]["content"] == "q" + r["id"][1:] for r in rows)


def test_dry_run_lists_arms_and_calls(tmp_path):
    recipe = base_recipe(tmp_path, max_steps=2)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    result = subprocess.run(
        [sys.executable, "-m", "tapir.cli", "ablate", "--recipe", str(path), "--dry-run", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    assert list(plan["arms"]) == list(ARMS)
    assert (
        plan["arms"]["tapir"]["calls_upper_bound"] > 0 and plan["arms"]["no_refine"]["calls_upper_bound"] == 0
    )
    assert plan["steps"] == {"per_round": 2, "total": 8, "curriculum_rounds": 4}
    assert not workspace(recipe).exists()  # nothing was written


@pytest.mark.e2e
def test_ablation_runs_every_arm_through_one_evaluation(tmp_path):
    corpus = ["Solve math problem number 3 carefully.", "Write a short poem.", "An answer."] * 4
    tiny = build_tiny_student(tmp_path / "tiny", corpus)
    scripted = {"backend": "scripted", "model": "canned"}
    recipe = make_recipe(
        tmp_path,
        teacher=scripted,
        judge=scripted,
        student={"backend": "transformers", "model": str(tiny), "generation": {"max_new_tokens": 8}},
        training={"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 128, "learning_rate": 1e-3},
        evaluation={
            "models": ["rounds"],
            "batch_size": 4,
            "alpaca_eval": {
                "reference": "embedded",
                "difficulty": "embedded",
                "limit": 2,
                "max_new_tokens": 8,
            },
            "mt_bench": {
                "questions": "embedded",
                "judge_prompts": "embedded",
                "reference_answers": "embedded",
                "per_category": 1,
                "max_new_tokens": 8,
            },
        },
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    result = subprocess.run(
        [sys.executable, "-m", "tapir.cli", "ablate", "--recipe", str(path)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root = workspace(recipe)
    table = pd.read_csv(root / "ablation.csv")
    assert list(table["arm"]) == ["student", *ARMS]
    assert table.loc[table["arm"] != "student", "win_rate"].notna().all()
    assert table["mt_bench"].notna().all() and table["mt_bench_standard_error"].notna().all()
    steps = {}
    for arm in ARMS:
        manifests = sorted((root / f"{arm}-checkpoints").glob("*/manifest.json"))
        steps[arm] = sum(json.loads(m.read_text())["metrics"]["global_step"] for m in manifests)
    assert len(set(steps.values())) == 1, steps  # equal budget
    page = (root / "eval" / "report.html").read_text()
    assert "Ablation at equal training budget" in page and 'alt="ablation"' in page
    assert (root / "eval" / "plots" / "ablation.png").is_file()
    assert "| arm |" in (root / "ablation.md").read_text()
    random_round = pd.read_parquet(root / "random" / "data" / "round_1.parquet")
    tapir_rows = sum(
        len(pd.read_parquet(p))
        for p in (root / "tapir" / "data").glob("*.parquet")
        if p.stem == "warmup" or p.stem.startswith("round_")
    )
    assert len(random_round) == tapir_rows


@pytest.mark.unit
def test_the_ablation_table_shows_the_judge_free_measures_beside_the_judged_ones():
    from tapir.evaluation.ablation_report import ablation_table, markdown

    leaderboard = pd.DataFrame(
        [
            {
                "model": "tapir",
                "win_rate": 50.0,
                "mt_bench": 4.34,
                "ae_ends_rate": 0.25,
                "ae_mean_tokens": 60.4,
            },
            {
                "model": "student",
                "win_rate": 50.0,
                "mt_bench": 4.33,
                "ae_ends_rate": 0.0,
                "ae_mean_tokens": 64.0,
            },
            {"model": "gpt4_1106_preview", "win_rate": 50.0},
        ]
    )
    table = ablation_table(leaderboard, {"tapir": "the recipe as it is"})
    assert list(table["arm"]) == ["student", "tapir"]  # the untrained student first, no published rows
    text = markdown(table)
    header, _, student, tapir = text.splitlines()
    assert "AE2 ends" in header and "AE2 tokens" in header
    assert "MT ends" not in header  # a column no arm has is left out
    assert student.split(" | ")[-2:] == ["0 %", "64 |"] and tapir.split(" | ")[-2:] == ["25 %", "60 |"]
