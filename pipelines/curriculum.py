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
    round_size: int
    notes: list[str] = field(default_factory=list)


def feasible_round_size(n_hard: int, n_easy: int, hard_share: list[float]) -> int:
    """Largest round size every round's schedule can fill without reusing an example in a round."""
    caps = []
    for share in hard_share:
        cap_hard = n_hard / share if share > 0 else math.inf
        cap_easy = n_easy / (1 - share) if share < 1 else math.inf
        caps.append(min(cap_hard, cap_easy))
    size = min(caps) if caps else 0
    return 0 if math.isinf(size) else math.floor(size + 1e-9)


def plan_curriculum(
    hard_pool: list[int],
    easy_pool: list[int],
    hard_share: list[float],
    rng: random.Random,
    round_size: int | None = None,
    carry_over: float = 0.0,
    warmup_pool: list[int] | None = None,
    warmup_size: int = 0,
) -> CurriculumPlan:
    """Split re-balanced pools (multisets of row indices) into rounds following ``hard_share``."""
    if not hard_pool and not easy_pool:
        raise DataError("curriculum: no rows left to plan (every row was excluded or the seed pool is empty)")
    notes: list[str] = []
    feasible = feasible_round_size(len(hard_pool), len(easy_pool), hard_share)
    if round_size is None:
        if feasible == 0:
            raise DataError(
                f"curriculum.hard_share: {len(hard_pool)} hard and {len(easy_pool)} easy rows cannot "
                f"fill the schedule {hard_share}; set curriculum.round_size or change difficulty.delta"
            )
        size = feasible
    else:
        size = round_size
        if size > feasible:
            notes.append(
                f"round_size {size} exceeds what the pools allow at the schedule's shares ({feasible}); "
                "short rounds take every available row"
            )

    rounds: list[RoundPlan] = []
    previous: list[int] = []
    for number, share in enumerate(hard_share, start=1):
        want_hard = round(share * size)
        want_easy = size - want_hard
        hard = rng.sample(hard_pool, min(want_hard, len(hard_pool)))
        easy = rng.sample(easy_pool, min(want_easy, len(easy_pool)))
        if len(hard) < want_hard or len(easy) < want_easy:
            notes.append(
                f"round {number}: wanted {want_hard} hard + {want_easy} easy, "
                f"had {len(hard)} hard + {len(easy)} easy"
            )
        carried = rng.sample(previous, round(carry_over * len(previous))) if previous else []
        rounds.append(RoundPlan(number, share, hard, easy, carried))
        previous = hard + easy

    warmup: list[int] = []
    if warmup_size and warmup_pool:
        warmup = rng.sample(warmup_pool, min(warmup_size, len(warmup_pool)))
        if len(warmup) < warmup_size:
            notes.append(f"warm-up: wanted {warmup_size} rows, had {len(warmup)}")
    return CurriculumPlan(rounds, warmup, size, notes)
