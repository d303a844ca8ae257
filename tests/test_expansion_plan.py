"""Expansion by task ratio: budgets follow the mix's deficit, seeds are used hard first, then
easy, then the bare label; repeated requests on one seed are distinct prompts."""

from __future__ import annotations

import pytest

from tapir.pipelines.expansion_plan import (
    FROM_EASY,
    FROM_HARD,
    FROM_LABEL,
    largest_remainder,
    plan_expansion,
    plan_summary,
    task_budgets,
)
from tapir.pipelines.prompts import render, template_text


def row(id: str, task: str, difficulty: str, mfd: float) -> dict:
    return {
        "id": id,
        "instruction": f"instruction {id}",
        "input": "",
        "task": task,
        "difficulty": difficulty,
        "mfd": mfd,
    }


POOL = [
    row("w1", "Writing", "hard", 3.0),
    row("w2", "Writing", "easy", 0.0),
    row("w3", "Writing", "easy", 0.0),
    row("w4", "Writing", "easy", 0.0),
    row("m1", "Math", "easy", 0.5),
    row("r1", "Reasoning", "hard", 1.0),
    row("x1", "Art", "excluded", 0.0),
]
MIX = {"Writing": 0.2, "Math": 0.4, "Reasoning": 0.2, "Code": 0.2, "Art": 0.0}


def test_largest_remainder_sums_to_the_total_and_follows_the_weights():
    assert largest_remainder({"a": 1, "b": 1, "c": 2}, 7) == {"a": 2, "b": 2, "c": 3}
    assert sum(largest_remainder({"a": 0.3, "b": 0.3, "c": 0.4}, 10).values()) == 10
    assert largest_remainder({"a": 0.0}, 5) == {} and largest_remainder({"a": 1.0}, 0) == {}


def test_budgets_go_to_the_tasks_furthest_below_their_share():
    budgets = task_budgets({"Writing": 4, "Math": 1, "Reasoning": 1}, MIX, 10)
    # final 16 rows: Math wants 6.4 (has 1), Code 3.2 (has 0), Reasoning 3.2 (has 1), Writing 3.2 (has 4)
    assert sum(budgets.values()) == 10
    assert budgets["Math"] > budgets["Code"] >= budgets["Reasoning"] > budgets.get("Writing", 0) == 0
    assert "Art" not in budgets  # a zero share is never expanded


def test_by_mix_uses_hard_seeds_then_easy_then_the_label_alone():
    requests = plan_expansion(POOL, MIX, mode="mix", per_hard_seed=2, max_hard_seeds=None, budget=10)
    by_task: dict[str, list] = {}
    for r in requests:
        by_task.setdefault(r.task, []).append(r)
    assert {r.source for r in by_task["Math"]} == {FROM_EASY}  # Math has no hard seed
    assert {r.source for r in by_task["Reasoning"]} == {FROM_HARD}
    assert {r.source for r in by_task["Code"]} == {FROM_LABEL} and all(
        r.seed is None for r in by_task["Code"]
    )
    assert "Writing" not in by_task and "Art" not in by_task
    # one seed asked several times: each request its own variant, so its own prompt
    math = [(r.seed["id"], r.variant) for r in by_task["Math"]]
    assert len(set(math)) == len(math) == sum(1 for r in requests if r.task == "Math")
    rows = [r.row() for r in requests]
    assert plan_summary(rows)["Code"] == {FROM_LABEL: len(by_task["Code"])}
    assert all(r["id"] == "label:code" and r["instruction"] == "" for r in rows if r["task"] == "Code")


def test_default_budget_is_what_uniform_would_write():
    uniform = plan_expansion(POOL, MIX, mode="uniform", per_hard_seed=3, max_hard_seeds=None, budget=None)
    by_mix = plan_expansion(POOL, MIX, mode="mix", per_hard_seed=3, max_hard_seeds=None, budget=None)
    assert len(uniform) == len(by_mix) == 6
    assert {r.seed["id"] for r in uniform} == {"w1", "r1"} and all(r.source == FROM_HARD for r in uniform)


@pytest.mark.parametrize(
    ("instruction", "variant", "present", "absent"),
    [
        ("Solve x + 1 = 2.", 0, ["Example: Solve x + 1 = 2.", 'task type "Math"'], ["number"]),
        ("Solve x + 1 = 2.", 2, ["new instruction number 3"], []),
        ("", 1, ['of the task type "Math"', "new instruction number 2"], ["Example:"]),
    ],
)
def test_the_expansion_prompt_shows_the_seed_or_the_label_and_the_variant(
    instruction, variant, present, absent
):
    text = render(
        template_text("expand_instruction"), instruction=instruction, input="", task="Math", variant=variant
    )
    assert all(p in text for p in present) and not any(a in text for a in absent)
