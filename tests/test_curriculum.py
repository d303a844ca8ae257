import random

import pytest

from tapir.errors import DataError
from tapir.pipelines.curriculum import feasible_round_size, plan_curriculum


def test_hard_share_grows_as_scheduled():
    hard, easy = list(range(40)), list(range(40, 140))
    plan = plan_curriculum(hard, easy, [0.3, 0.6, 0.9], random.Random(0), round_size=40)
    assert [r.size for r in plan.rounds] == [40, 40, 40]
    assert [len(r.hard) for r in plan.rounds] == [12, 24, 36]
    assert all(set(r.hard) <= set(hard) and set(r.easy) <= set(easy) for r in plan.rounds)
    assert all(len(set(r.hard)) == len(r.hard) for r in plan.rounds)  # no reuse within a round
    assert plan.notes == []


def test_default_round_size_is_the_largest_the_schedule_allows():
    assert feasible_round_size(10, 30, [0.3, 0.6, 0.9]) == 11
    assert feasible_round_size(10, 0, [1.0]) == 10
    assert feasible_round_size(0, 10, [0.5]) == 0
    plan = plan_curriculum(list(range(10)), list(range(10, 40)), [0.3, 0.6, 0.9], random.Random(0))
    assert plan.round_size == 11
    assert [len(r.hard) for r in plan.rounds] == [3, 7, 10]


def test_short_pools_are_reported_not_padded():
    plan = plan_curriculum([1, 2], [3, 4, 5, 6], [0.5, 1.0], random.Random(0), round_size=4)
    assert len(plan.rounds[1].hard) == 2 and plan.rounds[1].easy == []
    assert any("round 2" in note for note in plan.notes)


def test_carry_over_replays_part_of_the_previous_round():
    plan = plan_curriculum(
        list(range(20)), list(range(20, 60)), [0.25, 0.5], random.Random(0), round_size=20, carry_over=0.5
    )
    assert plan.rounds[0].carried == []
    assert len(plan.rounds[1].carried) == 10
    assert set(plan.rounds[1].carried) <= set(plan.rounds[0].hard + plan.rounds[0].easy)


def test_warmup_slice_and_seeding():
    a = plan_curriculum(
        list(range(10)),
        list(range(10, 30)),
        [0.5],
        random.Random(5),
        warmup_pool=list(range(30)),
        warmup_size=4,
    )
    b = plan_curriculum(
        list(range(10)),
        list(range(10, 30)),
        [0.5],
        random.Random(5),
        warmup_pool=list(range(30)),
        warmup_size=4,
    )
    assert len(a.warmup) == 4 and a.warmup == b.warmup
    assert a.rounds[0].hard == b.rounds[0].hard


def test_impossible_schedules_fail_clearly():
    with pytest.raises(DataError, match="no rows left"):
        plan_curriculum([], [], [0.5], random.Random(0))
    with pytest.raises(DataError, match="curriculum.hard_share"):
        plan_curriculum([], [1, 2, 3], [0.5, 0.9], random.Random(0))
