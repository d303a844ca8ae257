"""Task re-balancing toward a target mix, by up- and down-sampling (METHOD step 7).

Mixture weights that can only shrink a dataset cannot raise a rare ability's share, so a
label below its target is up-sampled (examples repeated), one above is down-sampled. Quotas
use the largest-remainder method, so the result has exactly ``size`` rows and every label's
share is within ``1/size`` of its (renormalised) target.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RebalanceResult:
    """``copies[i]`` is how often row ``i`` appears after re-balancing (0 = dropped)."""

    copies: list[int]
    quotas: dict[str, int]
    effective_mix: dict[str, float]
    before: dict[str, int]
    after: dict[str, int]
    notes: list[str] = field(default_factory=list)


def largest_remainder(shares: dict[str, float], total: int) -> dict[str, int]:
    """Integer quotas summing to ``total`` that are as close as possible to ``share * total``."""
    if total < 0:
        raise ValueError("total must be >= 0")
    weight = sum(shares.values())
    if weight <= 0:
        raise ValueError("shares must have positive weight")
    exact = {k: v / weight * total for k, v in shares.items()}
    quotas = {k: math.floor(x) for k, x in exact.items()}
    missing = total - sum(quotas.values())
    # Ties broken by label name so the result does not depend on dict order.
    order = sorted(exact, key=lambda k: (-(exact[k] - quotas[k]), k))
    for key in order[:missing]:
        quotas[key] += 1
    return quotas


def rebalance(
    labels: list[str],
    target_mix: dict[str, float],
    size: int,
    rng: random.Random,
    max_copies: int | None = None,
) -> RebalanceResult:
    """Resample rows (given by their task labels) to ``size`` rows following ``target_mix``.

    Labels with a positive target but no rows cannot be up-sampled from nothing: their share
    is spread over the present labels in proportion to their targets (and noted). With
    ``max_copies`` no row appears more often than that: a label whose quota would need more
    copies gets fewer rows (noted), so a rare label's share is not met by repeating one row
    many times over.
    """
    before = Counter(labels)
    notes: list[str] = []
    absent = sorted(k for k, v in target_mix.items() if v > 0 and before.get(k, 0) == 0)
    if absent:
        notes.append(f"no rows for {', '.join(absent)}: their target share went to the present labels")
    effective = {k: v for k, v in target_mix.items() if v > 0 and before.get(k, 0) > 0}
    if not effective:
        if labels:
            notes.append("no present label has a target share: kept the original distribution")
        effective = {k: float(n) for k, n in before.items()}
    copies = [0] * len(labels)
    if not labels or size == 0:
        return RebalanceResult(copies, {}, {}, dict(before), {}, notes)

    total_weight = sum(effective.values())
    effective_mix = {k: v / total_weight for k, v in effective.items()}
    quotas = largest_remainder(effective_mix, size)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)

    for label in sorted(quotas):
        quota, indices = quotas[label], by_label.get(label, [])
        if quota == 0 or not indices:
            continue
        if max_copies is not None and quota > max_copies * len(indices):
            notes.append(
                f"{label}: {quota} rows wanted from {len(indices)}, capped at {max_copies * len(indices)} "
                f"(rebalance.max_copies {max_copies})"
            )
            quota = max_copies * len(indices)
        full_rounds, rest = divmod(quota, len(indices))
        for index in indices:
            copies[index] += full_rounds
        for index in rng.sample(indices, rest):
            copies[index] += 1
    after = Counter()
    for index, count in enumerate(copies):
        if count:
            after[labels[index]] += count
    return RebalanceResult(copies, quotas, effective_mix, dict(before), dict(after), notes)
