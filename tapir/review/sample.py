"""Which rows of a round a reviewer sees: a stratified sample by task label x difficulty bucket.

A uniform sample of a re-balanced round is dominated by its biggest categories; reviewers then
never see the rare labels where the classifier errs most. Every non-empty stratum gets at
least one record (when the sample is big enough) and the rest is shared in proportion to the
strata's sizes (largest remainders), so the sample still says how the round looks.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any


def bucket_of(row: dict[str, Any], edges: list[float] | None) -> str:
    """The difficulty bucket: the run's own hard/easy label, or an MFD interval of ``edges``."""
    if edges is None or row.get("mfd") is None:
        return str(row.get("difficulty") or "unknown")
    mfd = float(row["mfd"])
    if mfd < edges[0]:
        return f"mfd < {edges[0]:g}"
    for low, high in zip(edges, edges[1:]):
        if mfd < high:
            return f"{low:g} <= mfd < {high:g}"
    return f"mfd >= {edges[-1]:g}"


def unique_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per example id: up-sampled copies and carried-over rows are the same example."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(str(row["id"]), row)
    return list(seen.values())


def allocate(sizes: dict[tuple[str, str], int], total: int) -> dict[tuple[str, str], int]:
    """Records per stratum: one each first (if ``total`` allows), the rest by largest remainder."""
    strata = sorted(k for k, n in sizes.items() if n > 0)
    available = sum(sizes[k] for k in strata)
    total = min(total, available)
    counts = {k: 0 for k in strata}
    if total <= 0:
        return counts
    if total >= len(strata):
        counts = {k: 1 for k in strata}
    else:  # fewer records than strata: the biggest strata first
        for k in sorted(strata, key=lambda k: (-sizes[k], k))[:total]:
            counts[k] = 1
        return counts
    left = total - len(strata)
    room = {k: sizes[k] - 1 for k in strata}
    room_total = sum(room.values())
    if left and room_total:
        shares = {k: left * room[k] / room_total for k in strata}
        for k in strata:
            counts[k] += min(room[k], math.floor(shares[k]))
        remaining = total - sum(counts.values())
        order = sorted(strata, key=lambda k: (-(shares[k] - math.floor(shares[k])), -sizes[k], k))
        while remaining > 0:
            progressed = False
            for k in order:
                if remaining and counts[k] < sizes[k]:
                    counts[k] += 1
                    remaining -= 1
                    progressed = True
            if not progressed:
                break
    return counts


def stratified_sample(
    rows: list[dict[str, Any]], size: int, seed: int, edges: list[float] | None = None
) -> list[dict[str, Any]]:
    """Up to ``size`` distinct examples of ``rows``, stratified by (task, difficulty bucket).

    Each chosen row gets ``review_stratum`` ("task | bucket"). Deterministic for a seed.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in unique_rows(rows):
        groups[(str(row.get("task") or "unlabelled"), bucket_of(row, edges))].append(row)
    counts = allocate({k: len(v) for k, v in groups.items()}, size)
    rng = random.Random(seed)
    chosen: list[dict[str, Any]] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: str(r["id"]))
        for row in rng.sample(members, counts.get(key, 0)):
            chosen.append({**row, "review_stratum": f"{key[0]} | {key[1]}"})
    return sorted(chosen, key=lambda r: (r["review_stratum"], str(r["id"])))
