import random
from collections import Counter

import pytest

from tapir.pipelines.rebalance import largest_remainder, rebalance
from tapir.recipe import Recipe


@pytest.mark.parametrize("total", [0, 1, 7, 100, 1001])
def test_largest_remainder_sums_exactly_and_stays_within_one(total):
    shares = {"a": 0.5, "b": 0.3, "c": 0.2}
    quotas = largest_remainder(shares, total)
    assert sum(quotas.values()) == total
    assert all(abs(quotas[k] - shares[k] * total) < 1 for k in shares)


def test_rebalance_reaches_target_mix_with_up_and_down_sampling():
    labels = ["Math"] * 5 + ["Writing"] * 60 + ["Code Debug"] * 15 + ["History"] * 20
    target = {"Math": 0.4, "Writing": 0.2, "Code Debug": 0.3, "History": 0.1}
    result = rebalance(labels, target, size=200, rng=random.Random(0))
    assert sum(result.copies) == 200
    after = Counter()
    for label, copies in zip(labels, result.copies):
        after[label] += copies
    for label, share in target.items():
        assert abs(after[label] / 200 - share) <= 1 / 200
    # Math had 5 rows for 80 slots: every Math row is repeated (up-sampling) ...
    assert all(c == 16 for label, c in zip(labels, result.copies) if label == "Math")
    # ... Writing had 60 rows for 40 slots: some are dropped (down-sampling), none repeated.
    writing = [c for label, c in zip(labels, result.copies) if label == "Writing"]
    assert writing.count(0) == 20 and max(writing) == 1
    assert result.before == {"Math": 5, "Writing": 60, "Code Debug": 15, "History": 20}
    assert result.after == dict(after)


def test_rebalance_is_seeded():
    labels = [random.Random(1).choice("abc") for _ in range(50)]
    target = {"a": 0.2, "b": 0.5, "c": 0.3}
    first = rebalance(labels, target, 40, random.Random(42)).copies
    assert first == rebalance(labels, target, 40, random.Random(42)).copies
    assert first != rebalance(labels, target, 40, random.Random(43)).copies


def test_absent_labels_share_is_spread_and_noted():
    labels = ["Math"] * 10 + ["Writing"] * 10
    result = rebalance(labels, {"Math": 0.5, "Writing": 0.25, "Music": 0.25}, 30, random.Random(0))
    assert result.after == {"Math": 20, "Writing": 10}
    assert result.effective_mix == pytest.approx({"Math": 2 / 3, "Writing": 1 / 3})
    assert any("Music" in note for note in result.notes)


def test_labels_with_zero_target_are_dropped():
    labels = ["Math"] * 4 + ["Toxicity"] * 4
    result = rebalance(labels, {"Math": 1.0, "Toxicity": 0.0}, 8, random.Random(0))
    assert result.after == {"Math": 8}


def test_easydistill_mix_on_a_skewed_pool():
    recipe = Recipe(name="x")
    mix = recipe.taxonomy.normalised_mix()
    labels = ["Writing"] * 300 + ["Math"] * 10 + ["Reasoning"] * 10 + [lab for lab in mix for _ in range(3)]
    result = rebalance(labels, mix, 500, random.Random(3))
    assert sum(result.after.values()) == 500
    for label, share in mix.items():
        assert abs(result.after.get(label, 0) / 500 - share) <= 1 / 500 + 1e-12


def test_max_copies_caps_up_sampling_and_says_so():
    labels = ["Math"] * 2 + ["Writing"] * 38
    target = {"Math": 0.5, "Writing": 0.5}
    free = rebalance(labels, target, size=40, rng=random.Random(0))
    assert [c for label, c in zip(labels, free.copies) if label == "Math"] == [10, 10]
    capped = rebalance(labels, target, size=40, rng=random.Random(0), max_copies=4)
    assert [c for label, c in zip(labels, capped.copies) if label == "Math"] == [4, 4]
    assert capped.after["Math"] == 8 and capped.after["Writing"] == 20
    assert any("Math: 20 rows wanted from 2, capped at 8 (rebalance.max_copies 4)" in n for n in capped.notes)
