"""What the next ``tapir data`` takes from the pulled reviews: labels, rejections, fixed responses.

Reads every ``<output>-review/<round>/decisions.parquet``; where one example was decided in two
pulls, the later pull wins. The recipe's ``review`` switches say which kinds are applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tapir.manifest import sha256_file
from tapir.recipe import Recipe
from tapir.stage_contract import ReviewRun, review_decision_files


@dataclass
class Corrections:
    labels: dict[str, str] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    fixes: dict[str, str] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    unknown_labels: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.labels or self.rejected or self.fixes)


def _pulled_at(decisions: Path) -> str:
    report = decisions.parent / ReviewRun.AGREEMENT
    if report.is_file():
        return str(json.loads(report.read_text(encoding="utf-8")).get("pulled", ""))
    return ""


def load_corrections(recipe: Recipe) -> Corrections:
    corrections = Corrections()
    review = recipe.review
    files = sorted(review_decision_files(recipe), key=lambda p: (_pulled_at(p), p.parent.name))
    labels = set(recipe.taxonomy.labels)
    rejected: dict[str, bool] = {}
    for path in files:
        frame = pd.read_parquet(path)
        corrections.sources.append({"file": str(path), "rows": len(frame), "sha256": sha256_file(path)})
        for row in frame.to_dict("records"):
            example = str(row["id"])
            rejected[example] = bool(row["rejected"])
            if review.override_labels and row["label_changed"]:
                if row["task"] in labels:
                    corrections.labels[example] = str(row["task"])
                else:  # the taxonomy changed since the review: say so, do not invent a label
                    corrections.unknown_labels[example] = str(row["task"])
            if review.use_fixes and isinstance(row.get("fix"), str) and row["fix"].strip():
                corrections.fixes[example] = row["fix"].strip()
    if review.drop_rejected:
        corrections.rejected = sorted(k for k, v in rejected.items() if v)
    return corrections


def applied_summary(
    pool: list[dict[str, Any]], curriculum: list[dict[str, Any]], corrections: Corrections
) -> dict[str, Any]:
    """What the reviewers' decisions changed in this run, and what matched no row."""
    pool_ids = {str(r["id"]) for r in pool}
    wanted = set(corrections.labels) | set(corrections.rejected) | set(corrections.fixes)
    notes = [str(r.get("review_note") or "") for r in pool]
    return {
        "sources": corrections.sources,
        "labels_overridden": sum("label" in n for n in notes),
        "rows_rejected": sum("rejected" in n for n in notes),
        "responses_fixed": len({str(r["id"]) for r in curriculum if r.get("response_source") == "review"}),
        "decisions_matching_no_row": len(wanted - pool_ids),
        "labels_not_in_taxonomy": len(corrections.unknown_labels),
    }


def describe_applied(review: dict[str, Any] | None) -> str | None:
    """One sentence on what reviewers changed in a run (summary, card), or None if nothing was read."""
    if not review or not review.get("sources"):
        return None
    return (
        f"{review['labels_overridden']} task labels overridden, {review['rows_rejected']} rows rejected, "
        f"{review['responses_fixed']} reviewer-written responses trained on "
        f"({review['decisions_matching_no_row']} decisions matched no row)"
    )
