"""When the pool is graded again by a trained student, and which student graded each round.

The paper measures Model Fitting Difficulty with a student warmed up by a short SFT, not the
untrained base model: with ``training.mfd_student: warmed_up`` the warm-up round's checkpoint
answers the pool again and every curriculum round is built from its grades. The closed loop
goes further and re-grades after every round. Training, its dry-run and ``make distill`` all
ask this module, so they cannot disagree about where the data of a round comes from.
"""

from __future__ import annotations

from tapir.recipe import Recipe
from tapir.stage_contract import WARMUP


def regrade_points(recipe: Recipe, names: list[str], closed_loop: bool) -> list[int]:
    """Indices of the rounds whose data a re-score after the round before them builds."""
    warmed_up = recipe.training.mfd_student == "warmed_up" and bool(names) and names[0] == WARMUP
    if closed_loop:
        first = 1 if warmed_up or not names or names[0] != WARMUP else 2
        return list(range(first, len(names)))
    return [1] if warmed_up and len(names) > 1 else []


def data_round(index: int, points: list[int]) -> int | None:
    """The round after which the re-score that built round ``index``'s data ran (None: the data run)."""
    earlier = [p for p in points if p <= index]
    return earlier[-1] - 1 if earlier else None


def graded_by(names: list[str], points: list[int]) -> list[str]:
    """Per round, in words: whose answers the MFD behind its data graded."""
    out = []
    for index in range(len(names)):
        after = data_round(index, points)
        if names[index] == WARMUP:
            out.append("none (random teacher examples)")
            continue
        out.append("the base student (data pass)" if after is None else f"the {names[after]} checkpoint")
    return out
