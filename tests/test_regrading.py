"""Warm-up first (the paper's order): which rounds a re-score builds, and whose grades each round's
data carries, for every combination of warm-up, closed loop and training.mfd_student."""

from __future__ import annotations

import pytest

from tapir.recipe import recipe_from_dict
from tapir.training.regrading import data_round, graded_by, regrade_points

WITH_WARMUP = ["warmup", "round_1", "round_2", "round_3"]
WITHOUT = ["round_1", "round_2"]


def recipe(mfd_student: str):
    return recipe_from_dict({"name": "r", "training": {"mfd_student": mfd_student}})


@pytest.mark.parametrize(
    ("mfd_student", "names", "closed_loop", "points", "graders"),
    [
        # the paper's default: re-graded once, after the warm-up; every round from those grades
        ("warmed_up", WITH_WARMUP, False, [1], ["none", "warmup", "warmup", "warmup"]),
        ("base", WITH_WARMUP, False, [], ["none", "base", "base", "base"]),
        # closed loop: after every round; base keeps round 1 on the data pass's grades
        ("warmed_up", WITH_WARMUP, True, [1, 2, 3], ["none", "warmup", "round_1", "round_2"]),
        ("base", WITH_WARMUP, True, [2, 3], ["none", "base", "round_1", "round_2"]),
        # no warm-up round: nothing to warm up with, the base student grades round 1
        ("warmed_up", WITHOUT, False, [], ["base", "base"]),
        ("warmed_up", WITHOUT, True, [1], ["base", "round_1"]),
    ],
)
def test_regrade_points_and_graders(mfd_student, names, closed_loop, points, graders):
    got = regrade_points(recipe(mfd_student), names, closed_loop)
    assert got == points
    words = graded_by(names, got)
    for said, expected in zip(words, graders):
        assert expected in said
    # a round's data comes from the latest re-score at or before it, else from the data run
    for index in range(len(names)):
        after = data_round(index, got)
        assert after is None or (after + 1 in got and after < index)
