"""How many new instructions each task gets, and from which seeds (METHOD step 6).

TAPIR's teacher expands seeds *according to a target task ratio*: tasks the mix wants more of
(reasoning, maths, code in EasyDistill's default) get more new instructions, so re-balancing
reaches the mix with fresh rows instead of copies of the few it has. ``by_mix`` splits the
expansion budget over tasks in proportion to their deficit against the target mix,

    deficit(t) = max(0, target(t) * (rows + budget) - rows(t)),

then writes each task's share from its hard seeds (highest MFD first), from its easy seeds when
it has no hard one, and from the label alone when the pool has no row of it at all (a label the
classifier never used is generated, not spread over the others). ``uniform`` is Lion's: the
same number of new instructions per hard seed, whatever its task.

Repeated requests on one seed carry a ``variant`` number that the prompt shows, so each is a
distinct prompt (and a distinct cache entry), not the same answer asked twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

HARD, EASY = "hard", "easy"
FROM_HARD, FROM_EASY, FROM_LABEL = "hard seed", "easy seed", "label only"


@dataclass(frozen=True)
class ExpansionRequest:
    """One new instruction to write: from ``seed`` (a row) or, when None, from the task label."""

    task: str
    source: str
    variant: int
    seed: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        seed = self.seed or {}
        slug = "-".join(self.task.lower().split())
        return {
            "id": seed.get("id") or f"label:{slug}",
            "instruction": seed.get("instruction") or "",
            "input": seed.get("input") or "",
            "task": self.task,
            "variant": self.variant,
            "expansion_source": self.source,
        }


def largest_remainder(weights: dict[str, float], total: int) -> dict[str, int]:
    """``total`` split in proportion to ``weights`` as integers that sum to ``total``."""
    positive = {k: w for k, w in weights.items() if w > 0}
    if total <= 0 or not positive:
        return {}
    scale = sum(positive.values())
    exact = {k: total * w / scale for k, w in positive.items()}
    shares = {k: int(v) for k, v in exact.items()}
    left = total - sum(shares.values())
    for key in sorted(exact, key=lambda k: (-(exact[k] - shares[k]), k))[:left]:
        shares[key] += 1
    return {k: v for k, v in shares.items() if v}


def task_budgets(counts: dict[str, int], target_mix: dict[str, float], budget: int) -> dict[str, int]:
    """New instructions per task: the budget in proportion to each task's deficit."""
    final = sum(counts.values()) + budget
    deficits = {t: max(0.0, share * final - counts.get(t, 0)) for t, share in target_mix.items()}
    return largest_remainder(deficits, budget)


def plan_expansion(
    rows: list[dict[str, Any]],
    target_mix: dict[str, float],
    *,
    mode: str,
    per_hard_seed: int,
    max_hard_seeds: int | None,
    budget: int | None,
) -> list[ExpansionRequest]:
    """The expansion requests for graded seed rows (``difficulty`` hard/easy, ``mfd``, ``task``)."""
    graded = [r for r in rows if r.get("difficulty") in (HARD, EASY) and r.get("task")]
    by_mfd = sorted(graded, key=lambda r: (-(r.get("mfd") or 0.0), str(r["id"])))
    hard = [r for r in by_mfd if r["difficulty"] == HARD]
    if max_hard_seeds is not None:
        hard = hard[:max_hard_seeds]
    if mode == "uniform":
        return [
            ExpansionRequest(str(r["task"]), FROM_HARD, variant, r)
            for r in hard
            for variant in range(per_hard_seed)
        ]
    total = per_hard_seed * len(hard) if budget is None else budget
    counts = Counter(str(r["task"]) for r in graded)
    requests: list[ExpansionRequest] = []
    for task, share in sorted(task_budgets(dict(counts), target_mix, total).items()):
        sources = [r for r in hard if r["task"] == task]
        kind = FROM_HARD
        if not sources:
            sources = [r for r in by_mfd if r["task"] == task and r["difficulty"] == EASY]
            kind = FROM_EASY
        if not sources:
            requests += [ExpansionRequest(task, FROM_LABEL, variant) for variant in range(share)]
            continue
        for index in range(share):
            requests.append(
                ExpansionRequest(task, kind, index // len(sources), sources[index % len(sources)])
            )
    return requests


def plan_summary(requests: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per task: how many new instructions were asked for, by source (the summary and card)."""
    plan: dict[str, dict[str, int]] = {}
    for request in requests:
        task = plan.setdefault(str(request.get("task")), {})
        source = str(request.get("expansion_source") or FROM_HARD)
        task[source] = task.get(source, 0) + 1
    return dict(sorted(plan.items(), key=lambda kv: -sum(kv[1].values())))
