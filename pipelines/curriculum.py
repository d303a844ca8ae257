"""Curriculum planning: each round mixes easy and hard examples, the hard share growing round
by round (METHOD step 9), so the student moves from what it nearly fits to what it does not.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from tapir.errors import DataError


@dataclass
class RoundPlan:
    """Row indices (into the selected rows) of one round; indices repeat where up-sampled."""

    round: int
    hard_share: float
    hard: list[int]
    easy: list[int]
    carried: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.hard) + len(self.easy)

    @property
    def achieved_hard_share(self) -> float:
        return len(self.hard) / self.size if self.size else 0.0


@dataclass
class CurriculumPlan:
    rounds: list[RoundPlan]
    warmup: list[int]
    round_sizes: list[int]
    notes: list[str] = field(default_factory=list)


def feasible_round_size(n_hard: int, n_easy: int, hard_share: list[float]) -> int:
    """Largest size all rounds can share when no example is in two rounds: the schedule's hard
    examples over every round come from ``n_hard``, its easy ones from ``n_easy``."""
    hard_total, easy_total = sum(hard_share), sum(1 - s for s in hard_share)
    cap_hard = n_hard / hard_total if hard_total > 0 else math.inf
    cap_easy = n_easy / easy_total if easy_total > 0 else math.inf
    size = min(cap_hard, cap_easy)
    return 0 if math.isinf(size) else math.floor(size + 1e-9)


def _sizes(
    n_hard: int, n_easy: int, hard_share: list[float], round_size: int | None, round_sizes: list[int] | None
) -> tuple[list[int], list[str]]:
    feasible = feasible_round_size(n_hard, n_easy, hard_share)
    if round_sizes is not None:
        return list(round_sizes), []
    if round_size is None:
        if feasible == 0:
            raise DataError(
                f"curriculum.hard_share: {n_hard} hard and {n_easy} easy rows cannot fill the schedule "
                f"{hard_share}; set curriculum.round_size or change difficulty.delta"
            )
        return [feasible] * len(hard_share), []
    notes = []
    if round_size > feasible:
        notes.append(
            f"round_size {round_size} exceeds what the pools allow at the schedule's shares ({feasible}) "
            "with no example in two rounds; short rounds take every available row"
        )
    return [round_size] * len(hard_share), notes


def plan_curriculum(
    hard_pool: list[int],
    easy_pool: list[int],
    hard_share: list[float],
    rng: random.Random,
    round_size: int | None = None,
    carry_over: float = 0.0,
    warmup_pool: list[int] | None = None,
    warmup_size: int = 0,
    round_sizes: list[int] | None = None,
) -> CurriculumPlan:
    """Split re-balanced pools (multisets of row indices: an up-sampled row appears once per
    copy) into rounds following ``hard_share``. A row is in at most one round (its copies with
    it); only ``carry_over`` replays part of a round in the next. Sizes are ``round_sizes`` (one
    per round, growing allowed), else ``round_size`` for every round, else the largest size the
    pools can fill."""
    if not hard_pool and not easy_pool:
        raise DataError("curriculum: no rows left to plan (every row was excluded or the seed pool is empty)")
    sizes, notes = _sizes(len(hard_pool), len(easy_pool), hard_share, round_size, round_sizes)

    rounds: list[RoundPlan] = []
    previous: list[int] = []
    hard_left, easy_left = list(hard_pool), list(easy_pool)
    for number, (share, size) in enumerate(zip(hard_share, sizes), start=1):
        want_hard = round(share * size)
        want_easy = size - want_hard
        hard = rng.sample(hard_left, min(want_hard, len(hard_left)))
        easy = rng.sample(easy_left, min(want_easy, len(easy_left)))
        if len(hard) < want_hard or len(easy) < want_easy:
            notes.append(
                f"round {number}: wanted {want_hard} hard + {want_easy} easy, "
                f"had {len(hard)} hard + {len(easy)} easy"
            )
        used = set(hard) | set(easy)
        hard_left = [i for i in hard_left if i not in used]
        easy_left = [i for i in easy_left if i not in used]
        carried = rng.sample(previous, round(carry_over * len(previous))) if previous else []
        rounds.append(RoundPlan(number, share, hard, easy, carried))
        previous = hard + easy

    empty = [plan.round for plan in rounds if not plan.hard and not plan.easy]
    if empty:
        field = "round_sizes" if round_sizes is not None else "round_size"
        fits = feasible_round_size(len(hard_pool), len(easy_pool), hard_share)
        raise DataError(
            f"curriculum.{field}: round {empty[0]} would get no example: {len(hard_pool)} hard and "
            f"{len(easy_pool)} easy rows fill rounds of {sizes} only up to round {empty[0] - 1}, with no "
            f"example in two rounds; at most {fits} "
            "per round fills every round (or leave it unset)"
        )
    warmup: list[int] = []
    if warmup_size and warmup_pool:
        warmup = rng.sample(warmup_pool, min(warmup_size, len(warmup_pool)))
        if len(warmup) < warmup_size:
            notes.append(f"warm-up: wanted {warmup_size} rows, had {len(warmup)}")
    return CurriculumPlan(rounds, warmup, sizes, notes)
