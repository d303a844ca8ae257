"""Reviewers' answers -> one decision per example, and how often reviewers agreed with the models.

Input is one dict per answer (record id, reviewer, status, question values, and the record's
metadata as the pipeline wrote it). Only *submitted* answers decide anything; drafts and
discarded answers are counted in the report, never read as a verdict.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from tapir.review.records import FALLS_SHORT, FIX, KEEP, REFINED_BETTER, TASK_LABEL

SUBMITTED = "submitted"


def _value(values: dict[str, Any], question: str) -> Any:
    item = values.get(question)
    return item.get("value") if isinstance(item, dict) else item


def answers_from_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten records ``{id, metadata, responses: [{user_id, status, values}]}`` to answer rows.

    ``values`` may be ``None``: Argilla stores a response discarded before any question was
    answered that way.
    """
    rows = []
    for record in records:
        meta = record.get("metadata") or {}
        for response in record.get("responses") or []:
            values = response.get("values") or {}
            task_label, keep, falls_short, rating, fix = (
                _value(values, q) for q in (TASK_LABEL, KEEP, FALLS_SHORT, REFINED_BETTER, FIX)
            )
            rows.append(
                {
                    "id": str(record["id"]),
                    "user_id": str(response.get("user_id")),
                    "status": str(response.get("status")),
                    TASK_LABEL: task_label,
                    KEEP: keep,
                    FALLS_SHORT: falls_short,
                    REFINED_BETTER: None if rating is None else int(rating),
                    FIX: fix.strip() if isinstance(fix, str) and fix.strip() else None,
                    "task": meta.get("task"),
                    "difficulty": meta.get("difficulty"),
                    "mfd": meta.get("mfd"),
                    "stratum": meta.get("stratum"),
                }
            )
    return rows


def _majority(values: list[str], prefer: str | None) -> str:
    counts = Counter(values)
    top = max(counts.values())
    tied = sorted(v for v, c in counts.items() if c == top)
    return prefer if prefer in tied else tied[0]


def decide(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One decision per example from its submitted answers.

    Label: the majority (a tie keeps the classifier's label if it is among the tied). Rejected:
    a strict majority said reject. Fix: the first non-empty fix, in reviewer order, of a
    reviewer who kept the example.
    """
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for answer in answers:
        if answer["status"] == SUBMITTED:
            by_id[answer["id"]].append(answer)
    decisions = []
    for example_id in sorted(by_id):
        group = sorted(by_id[example_id], key=lambda a: a["user_id"])
        original = group[0]["task"]
        labels = [a[TASK_LABEL] for a in group if a[TASK_LABEL]]
        label = _majority(labels, original) if labels else original
        rejects = sum(a[KEEP] == "reject" for a in group)
        keeps = sum(a[KEEP] == "keep" for a in group)
        fixes = [a[FIX] for a in group if a[FIX] and a[KEEP] != "reject"]
        decisions.append(
            {
                "id": example_id,
                "reviewers": len(group),
                "original_task": original,
                "task": label,
                "label_changed": bool(original) and label != original,
                "rejected": rejects > keeps,
                "fix": fixes[0] if fixes else None,
            }
        )
    return decisions


def _kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa, or None where it is undefined (fewer than 2 answers or 1 category)."""
    if len(a) < 2 or len(set(a) | set(b)) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score

    value = cohen_kappa_score(a, b)
    return None if value != value else round(float(value), 4)  # NaN when undefined


def _share(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def agreement(answers: list[dict[str, Any]], decisions: list[dict[str, Any]], sent: int) -> dict[str, Any]:
    """How often reviewers agreed with the classifier, the judge and each other; ``decisions`` is
    ``decide(answers)``, counted as the corrections the next run will apply."""
    statuses = Counter(a["status"] for a in answers)
    submitted = [a for a in answers if a["status"] == SUBMITTED]

    labelled = [a for a in submitted if a[TASK_LABEL] and a["task"]]
    per_task: dict[str, list[bool]] = defaultdict(list)
    for a in labelled:
        per_task[a["task"]].append(a[TASK_LABEL] == a["task"])
    label_agree = sum(a[TASK_LABEL] == a["task"] for a in labelled)
    classifier = {
        "answers": len(labelled),
        "agree": label_agree,
        "agreement": _share(label_agree, len(labelled)),
        "kappa": _kappa([a["task"] for a in labelled], [a[TASK_LABEL] for a in labelled]),
        "per_task": {
            task: {"answers": len(hits), "agreement": _share(sum(hits), len(hits))}
            for task, hits in sorted(per_task.items())
        },
    }

    judged = [a for a in submitted if a[FALLS_SHORT] in ("yes", "no") and a["difficulty"] in ("hard", "easy")]
    judge_says = ["yes" if a["difficulty"] == "hard" else "no" for a in judged]
    per_bucket: dict[str, list[bool]] = defaultdict(list)
    for a, says in zip(judged, judge_says):
        per_bucket[a["difficulty"]].append(a[FALLS_SHORT] == says)
    judge_agree = sum(a[FALLS_SHORT] == s for a, s in zip(judged, judge_says))
    judge = {
        "answers": len(judged),
        "agree": judge_agree,
        "agreement": _share(judge_agree, len(judged)),
        "kappa": _kappa(judge_says, [a[FALLS_SHORT] for a in judged]),
        "per_difficulty": {
            d: {"answers": len(h), "agreement": _share(sum(h), len(h))} for d, h in sorted(per_bucket.items())
        },
    }

    ratings = [a[REFINED_BETTER] for a in submitted if a[REFINED_BETTER] is not None]
    refinement = {
        "answers": len(ratings),
        "mean_rating": round(sum(ratings) / len(ratings), 3) if ratings else None,
        "better": sum(r >= 4 for r in ratings),
        "same": sum(r == 3 for r in ratings),
        "worse": sum(r <= 2 for r in ratings),
        "histogram": {str(k): v for k, v in sorted(Counter(ratings).items())},
    }

    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in submitted:
        by_id[a["id"]].append(a)
    pairs = [pair for group in by_id.values() for pair in combinations(group, 2)]
    reviewers = {
        "records_with_2_or_more": sum(len(g) >= 2 for g in by_id.values()),
        "pairs": len(pairs),
        "label_agreement": _share(sum(x[TASK_LABEL] == y[TASK_LABEL] for x, y in pairs), len(pairs)),
        "keep_agreement": _share(sum(x[KEEP] == y[KEEP] for x, y in pairs), len(pairs)),
    }

    return {
        "records_sent": sent,
        "records_reviewed": len(by_id),
        "answers": dict(sorted(statuses.items())),
        "classifier": classifier,
        "judge": judge,
        "refinement": refinement,
        "between_reviewers": reviewers,
        "corrections": {
            "labels_changed": sum(d["label_changed"] for d in decisions),
            "rejected": sum(d["rejected"] for d in decisions),
            "fixes": sum(bool(d["fix"]) for d in decisions),
        },
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def agreement_markdown(report: dict[str, Any], title: str) -> str:
    """The short report people read (also embedded in the dataset card)."""
    c, j, r = report["classifier"], report["judge"], report["refinement"]
    between, fixes = report["between_reviewers"], report["corrections"]
    answers = ", ".join(f"{k} {v}" for k, v in report["answers"].items()) or "none yet"
    lines = [
        f"### {title}",
        "",
        f"{report['records_reviewed']} of {report['records_sent']} records reviewed (answers: {answers}).",
        "",
        "| reviewers vs | answers | agreement | Cohen's kappa |",
        "|---|---|---|---|",
        f"| task classifier (label) | {c['answers']} | {_pct(c['agreement'])} | {_or_dash(c['kappa'])} |",
        f"| judge (hard/easy by MFD) | {j['answers']} | {_pct(j['agreement'])} | {_or_dash(j['kappa'])} |",
        "",
        f"Refined vs original response: {r['answers']} ratings, mean {_or_dash(r['mean_rating'])} "
        f"(better {r['better']}, same {r['same']}, worse {r['worse']}).",
        f"Between reviewers: {between['pairs']} answer pairs; label agreement "
        f"{_pct(between['label_agreement'])}, keep agreement {_pct(between['keep_agreement'])}.",
        f"Corrections for the next `make data`: {fixes['labels_changed']} labels changed, "
        f"{fixes['rejected']} rows rejected, {fixes['fixes']} responses fixed.",
    ]
    if c["per_task"]:
        lines += ["", "| task (classifier) | answers | reviewers agree |", "|---|---|---|"]
        lines += [f"| {t} | {v['answers']} | {_pct(v['agreement'])} |" for t, v in c["per_task"].items()]
    return "\n".join(lines) + "\n"
