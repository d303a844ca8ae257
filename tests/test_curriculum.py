import random

import pytest

from tapir.errors import DataError
from tapir.pipelines.curriculum import feasible_round_size, plan_curriculum


def test_hard_share_grows_as_scheduled():
    hard, easy = list(range(80)), list(range(80, 180))
    plan = plan_curriculum(hard, easy, [0.3, 0.6, 0.9], random.Random(0), round_size=40)
    assert [r.size for r in plan.rounds] == [40, 40, 40]
    assert [len(r.hard) for r in plan.rounds] == [12, 24, 36]
    assert all(set(r.hard) <= set(hard) and set(r.easy) <= set(easy) for r in plan.rounds)
    assert all(len(set(r.hard)) == len(r.hard) for r in plan.rounds)  # no reuse within a round
    assert plan.notes == []


def test_default_round_size_is_the_largest_the_schedule_allows():
    # No example in two rounds: the hard rows must last 0.3 s + 0.6 s + 0.9 s = 1.8 s (s <= 5.5).
    assert feasible_round_size(10, 30, [0.3, 0.6, 0.9]) == 5
    assert feasible_round_size(10, 0, [1.0]) == 10
    assert feasible_round_size(0, 10, [0.5]) == 0
    plan = plan_curriculum(list(range(10)), list(range(10, 40)), [0.3, 0.6, 0.9], random.Random(0))
    assert plan.round_sizes == [5, 5, 5]
    assert [len(r.hard) for r in plan.rounds] == [2, 3, 4]
    assert plan.notes == []


def test_a_row_is_in_at_most_one_round_copies_included():
    # Rows 0-9 hard with two copies each (re-balanced up-sampling), rows 10-49 easy.
    hard = [i for i in range(10) for _ in range(2)]
    easy = list(range(10, 50))
    plan = plan_curriculum(hard, easy, [0.25, 0.5], random.Random(3), round_size=12)
    rows = [set(r.hard + r.easy) for r in plan.rounds]
    assert not rows[0] & rows[1]
    assert all(r.carried == [] for r in plan.rounds)


def test_carry_over_is_the_only_replay_across_rounds():
    plan = plan_curriculum(
        list(range(20)), list(range(20, 60)), [0.25, 0.5], random.Random(0), round_size=16, carry_over=0.25
    )
    first, second = plan.rounds
    assert not set(first.hard + first.easy) & set(second.hard + second.easy)
    assert len(second.carried) == 4 and set(second.carried) <= set(first.hard + first.easy)


def test_round_sizes_may_grow():
    plan = plan_curriculum(
        list(range(30)), list(range(30, 60)), [0.2, 0.5, 0.8], random.Random(1), round_sizes=[5, 10, 20]
    )
    assert [r.size for r in plan.rounds] == [5, 10, 20]
    assert [len(r.hard) for r in plan.rounds] == [1, 5, 16]
    placed = [i for r in plan.rounds for i in r.hard + r.easy]
    assert len(placed) == len(set(placed)) == 35 and plan.notes == []


def test_short_pools_are_reported_not_padded():
    plan = plan_curriculum([1, 2, 3], [4, 5, 6, 7], [0.5, 1.0], random.Random(0), round_size=4)
    assert len(plan.rounds[0].hard) == 2  # round 1 took two hard rows; none is used twice
    assert len(plan.rounds[1].hard) == 1 and plan.rounds[1].easy == []  # the one left, not padded
    assert any("round 2" in note for note in plan.notes)


def test_a_round_size_that_leaves_a_round_empty_is_refused():
    """An empty round 2 used to be written, trained on nothing, and the run exited 0."""
    with pytest.raises(
        DataError, match=r"^curriculum.round_size: round 2 would get no example: .* at most 1 per"
    ):
        plan_curriculum([1, 2], [3, 4, 5, 6], [0.5, 1.0], random.Random(0), round_size=4)
    with pytest.raises(DataError, match=r"^curriculum.round_sizes: round 2"):
        plan_curriculum([1, 2], [3, 4, 5, 6], [0.5, 1.0], random.Random(0), round_sizes=[4, 4])


def test_carry_over_replays_part_of_the_previous_round():
    plan = plan_curriculum(
        list(range(20)), list(range(20, 60)), [0.25, 0.5], random.Random(0), round_size=20, carry_over=0.5
    )
    assert plan.notes == []
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


def test_rounds_are_ordered_by_number_in_the_summary():
    from tapir.pipelines.report import summarise
    from tapir.stage_contract import split_order

    assert sorted(["round_10", "round_2", "pool", "warmup", "round_1"], key=split_order) == [
        "warmup",
        "round_1",
        "round_2",
        "round_10",
        "pool",
    ]
    curriculum = [
        {"split": split, "round": number, "difficulty": "hard", "task": "Math", "carried": False}
        for number, split in [(10, "round_10"), (2, "round_2"), (0, "warmup"), (1, "round_1")]
    ]
    summary = summarise([], [], [], curriculum, {}, {"Math": 1.0}, [0.5] * 10)
    assert [r["split"] for r in summary["curriculum"]] == ["warmup", "round_1", "round_2", "round_10"]
