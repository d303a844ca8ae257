"""The non-LLM steps, called directly on rows (distilabel runs the same methods in the graph)."""

import pytest

from tapir.pipelines.prompts import template_text
from tapir.pipelines.steps import (
    CurriculumPlanner,
    ExpansionsToSeeds,
    MergePool,
    ModelFittingDifficulty,
    PlanExpansion,
    TaskRebalancer,
)


def graded(**overrides):
    row = {
        "id": "s1",
        "instruction": "Add 2 and 2.",
        "input": "",
        "origin": "seed",
        "parent_id": "",
        "teacher_score": 8.0,
        "student_score": 5.0,
        "task": "Math",
        "teacher_response_error": None,
        "student_response_error": None,
        "teacher_score_error": None,
        "student_score_error": None,
        "task_error": None,
        "teacher_response": "4",
    }
    row.update(overrides)
    return row


def one(step, rows):
    (out,) = list(step.process(rows))
    return out


@pytest.mark.parametrize(
    ("overrides", "difficulty", "mfd", "reason"),
    [
        ({}, "hard", 3.0, None),
        ({"student_score": 7.0}, "hard", 1.0, None),  # MFD == delta is hard (>=, as Lion)
        ({"student_score": 7.5}, "easy", 0.5, None),  # just below delta
        ({"student_score": 8.0}, "easy", 0.0, None),
        ({"student_score": 9.0}, "easy", -1.0, None),
        (
            {"teacher_score": None, "teacher_score_error": "no rating found"},
            "excluded",
            None,
            "judge grade of teacher: no rating found",
        ),
        ({"student_response_error": "empty output"}, "excluded", None, "student response: empty output"),
        (
            {"task": None, "task_error": "not a known task label: 'Poetry'"},
            "excluded",
            None,
            "task label: not a known task label: 'Poetry'",
        ),
        (
            {"teacher_score": 3.0, "student_score": 1.0},
            "excluded",
            None,
            "teacher score 3 below min_teacher_score",
        ),
    ],
)
def test_model_fitting_difficulty(overrides, difficulty, mfd, reason):
    step = ModelFittingDifficulty(name="mfd", delta=1.0, min_teacher_score=4)
    (row,) = one(step, [graded(**overrides)])
    assert (row["difficulty"], row["mfd"], row["excluded_reason"]) == (difficulty, mfd, reason)


def test_uniform_expansion_takes_highest_mfd_and_sends_a_placeholder_when_none():
    rows = [
        graded(id="a", mfd=2.0, difficulty="hard"),
        graded(id="b", mfd=5.0, difficulty="hard"),
        graded(id="c", mfd=0.0, difficulty="easy"),
    ]
    step = PlanExpansion(name="p", allocation="uniform", per_hard_seed=2, max_hard_seeds=1)
    assert [(r["id"], r["variant"]) for r in one(step, rows)] == [("b", 0), ("b", 1)]
    (only,) = one(PlanExpansion(name="p", allocation="uniform"), [graded(id="c", mfd=0.0, difficulty="easy")])
    assert only["placeholder"] is True


def test_expansions_drop_failures_and_duplicates():
    rows = [
        {
            "id": "a",
            "task": "Math",
            "expanded_instruction": "Compute 3 times 4 please.",
            "expansion_error": None,
        },
        {
            "id": "a",
            "task": "Math",
            "expanded_instruction": "compute 3 times  4 please.",
            "expansion_error": None,
        },
        {"id": "a", "task": "Math", "expanded_instruction": None, "expansion_error": "empty output"},
    ]
    out = one(ExpansionsToSeeds(name="e"), rows)
    assert len(out) == 1 and out[0]["origin"] == "expansion" and out[0]["parent_id"] == "a"
    assert out[0]["id"].startswith("a-x")
    (placeholder,) = one(ExpansionsToSeeds(name="e"), rows[2:])
    assert placeholder["placeholder"] is True


def test_merge_pool_excludes_expansions_that_repeat_a_seed():
    seed = graded(id="s1", difficulty="hard", mfd=3.0, distilabel_metadata={"raw_output_judge_teacher": "x"})
    twin = graded(
        id="s1-x1",
        origin="expansion",
        parent_id="s1",
        difficulty="easy",
        mfd=0.0,
        distilabel_metadata={"raw_output_judge_teacher_expanded": "y"},
    )
    (out,) = MergePool(name="m").process([seed], [twin, {"placeholder": True, "id": "__placeholder__"}])
    assert [r["id"] for r in out] == ["s1", "s1-x1"]
    assert out[1]["difficulty"] == "excluded" and out[1]["excluded_reason"] == "expansion repeats seed s1"
    assert out[1]["distilabel_metadata"] == {"raw_output_judge_teacher": "y"}


def test_rebalancer_resamples_each_bucket_to_the_mix():
    rows = [graded(id=f"h{i}", difficulty="hard", task="Writing") for i in range(8)]
    rows += [graded(id=f"m{i}", difficulty="hard", task="Math") for i in range(2)]
    rows += [graded(id=f"e{i}", difficulty="easy", task="Writing") for i in range(5)]
    rows += [graded(id="x", difficulty="excluded", task="Math")]
    out = one(TaskRebalancer(name="r", target_mix={"Math": 0.5, "Writing": 0.5}, seed=1), rows)
    hard = [r for r in out if r["difficulty"] == "hard"]
    assert sum(r["copies"] for r in hard) == 10
    assert sum(r["copies"] for r in hard if r["task"] == "Math") == 5  # 2 rows up-sampled to 5
    assert sum(r["copies"] for r in out if r["difficulty"] == "easy") == 5  # no Math easy rows: all Writing
    assert "x" not in {r["id"] for r in out}


def test_curriculum_planner_writes_chat_examples_with_refined_responses():
    rows = [
        graded(id=f"h{i}", difficulty="hard", copies=1, refined_response=f"better {i}", refine_error=None)
        for i in range(6)
    ]
    rows += [
        graded(id=f"e{i}", difficulty="easy", copies=1, refined_response=None, refine_error="empty output")
        for i in range(6)
    ]
    step = CurriculumPlanner(
        name="c",
        hard_share=[0.5, 1.0],
        round_size=4,
        warmup_size=2,
        seed=3,
        user_template=template_text("respond"),
    )
    out = one(step, rows)
    splits = [r["split"] for r in out]
    assert splits.count("warmup") == 2 and splits.count("round_1") == 4 and splits.count("round_2") == 4
    round_2 = [r for r in out if r["split"] == "round_2"]
    assert all(r["difficulty"] == "hard" for r in round_2)
    for row in out:
        assert row["messages"][0] == {"role": "user", "content": "Add 2 and 2."}
        expected = row["refined_response"] if row["difficulty"] == "hard" else row["teacher_response"]
        assert row["messages"][1] == {"role": "assistant", "content": expected}
        assert row["response_source"] == ("refined" if row["difficulty"] == "hard" else "teacher")
