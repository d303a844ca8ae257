"""How a data run's summary (``summary.json``) reads in words and tables: the same sentences on
the console, in the dry-run and on the dataset card."""

from __future__ import annotations

from typing import Any


def decontamination_line(report: dict[str, Any] | None) -> str | None:
    """What the decontamination step excluded, per benchmark (None when it did not run)."""
    if not report or not report.get("enabled"):
        return None
    excluded = report.get("excluded") or {}
    per = ", ".join(f"{name} {n}" for name, n in sorted(excluded.items())) or "none"
    return f"rows matching a benchmark prompt ({report['tests']}), excluded before re-balancing: {per}"


def task_table(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per task: rows before and after re-balancing, the new instructions expansion asked for (and
    from what), the generated rows and copies in the result, and the target share."""
    plan = summary.get("expansion_plan") or {}
    labels = sorted(
        set(summary["tasks_before"]) | set(summary["tasks_after"]) | set(plan),
        key=lambda k: (-summary["tasks_after"].get(k, 0), -sum(plan.get(k, {}).values()), k),
    )
    sources = summary.get("task_sources") or {}
    columns = [
        "task",
        "before",
        "expansion asked",
        "after",
        "of which generated",
        "copies added",
        "target share",
    ]
    rows = [
        [
            label,
            summary["tasks_before"].get(label, 0),
            ", ".join(f"{n} from {source}" for source, n in plan.get(label, {}).items()) or "-",
            summary["tasks_after"].get(label, 0),
            sources.get(label, {}).get("generated", 0),
            sources.get(label, {}).get("copies", 0),
            f"{summary['target_mix'].get(label, 0):.3f}",
        ]
        for label in labels
    ]
    return columns, rows


def classifier_line(report: dict[str, Any] | None) -> str:
    if not report:
        return ""
    if report["kind"] == "offline":
        return (
            f"Task labels: offline classifier ({report['features']} features, {report['training_rows']} "
            f"labelled rows); held-out accuracy {report['held_out_accuracy']:.0%} "
            f"({report['folds']}-fold cross-validation)."
        )
    return (
        f"Task labels: the {report['role']}'s model ({report['model']}) prompted with the taxonomy; its "
        "accuracy is not measured in a run (benchmarks/classifier_accuracy.py measures it)."
    )


def judging_line(judging: dict[str, Any] | None) -> str:
    """How the grades behind MFD were read, in one sentence (console and card)."""
    if not judging:
        return "Judge grades: as written by the judge."
    if judging.get("scoring") == "expected":
        how = (
            "expected over the rating tokens' log-probabilities (G-Eval: sum of p(k)·k, top "
            f"{judging.get('top_logprobs')} alternatives), so MFD is continuous"
        )
    else:
        how = "the number the judge wrote (sampled)"
    student = f" MFD graded the answers of student {judging['student']}." if judging.get("student") else ""
    return f"Judge grades: {how}.{student}"
