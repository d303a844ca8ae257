"""The run summary: rows in/out per step, parse failures, MFD, task mix before/after, tokens.

Computed from the tables the graph keeps (pool, expansion audit, selection, curriculum) and
the usage log, so every figure can be recomputed from the files of the run.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tapir.pipelines.steps import EASY, EXCLUDED, FAILURE_COLUMNS, HARD
from tapir.pipelines.tasks import NOT_GRADED
from tapir.publishing.summary_text import classifier_line, decontamination_line, judging_line, task_table
from tapir.recipe import Recipe
from tapir.review.corrections import describe_applied
from tapir.stage_contract import WARMUP, split_order


def _count_errors(rows: list[dict[str, Any]], column: str) -> tuple[int, Counter]:
    """Failures of one step, with their reasons; a grade never asked for (its answer failed)
    is the answer's failure, counted there, not the judge's."""
    reasons = Counter(str(r[column]) for r in rows if r.get(column) and not _not_graded(r[column]))
    return sum(reasons.values()), reasons


def _not_graded(reason: Any) -> bool:
    return str(reason).startswith(NOT_GRADED)


def summarise(
    pool: list[dict[str, Any]],
    expansions: list[dict[str, Any]],
    selected: list[dict[str, Any]],
    curriculum: list[dict[str, Any]],
    usage: dict[str, dict[str, float]],
    target_mix: dict[str, float],
    hard_share: list[float],
) -> dict[str, Any]:
    seeds = [r for r in pool if r.get("origin") == "seed"]
    expanded = [r for r in pool if r.get("origin") == "expansion"]
    steps: list[dict[str, Any]] = [
        {"step": "load_seeds", "rows_in": len(seeds), "ok": len(seeds), "failed": 0}
    ]
    failures: dict[str, int] = {}
    failure_reasons: dict[str, dict[str, int]] = {}
    step_names = ["respond_teacher", "respond_student", "judge_teacher", "judge_student", "classify_task"]
    for (column, what), step in zip(FAILURE_COLUMNS, step_names):
        failed, reasons = _count_errors(pool, column)
        failures[what] = failed
        failure_reasons[what] = dict(reasons.most_common(5))
        steps.append({"step": step, "rows_in": len(pool), "ok": len(pool) - failed, "failed": failed})

    expansion_failed, expansion_reasons = _count_errors(expansions, "expansion_error")
    failures["expansion"] = expansion_failed
    failure_reasons["expansion"] = dict(expansion_reasons.most_common(5))
    hard_parents = {r["id"] for r in expansions}
    steps.append(
        {
            "step": "expand_instructions",
            "rows_in": len(hard_parents),
            "ok": len(expansions) - expansion_failed,
            "failed": expansion_failed,
            "note": f"{len(expanded)} new instructions joined the pool",
        }
    )
    difficulty = Counter(r["difficulty"] for r in pool)
    steps.append(
        {
            "step": "fitting_difficulty",
            "rows_in": len(pool),
            "ok": difficulty[HARD] + difficulty[EASY],
            "failed": difficulty[EXCLUDED],
            "note": f"{difficulty[HARD]} hard, {difficulty[EASY]} easy",
        }
    )
    refine_failed, refine_reasons = _count_errors(selected, "refine_error")
    if any("refined_response" in r for r in selected):
        failures["refinement"] = refine_failed
        failure_reasons["refinement"] = dict(refine_reasons.most_common(5))
    copies = sum(int(r.get("copies") or 0) for r in selected)
    steps.append(
        {
            "step": "rebalance_tasks",
            "rows_in": difficulty[HARD] + difficulty[EASY],
            "ok": copies,
            "failed": 0,
            "note": f"{len(selected)} distinct rows",
        }
    )
    if any("refined_response" in r for r in selected):
        steps.append(
            {
                "step": "refine_responses",
                "rows_in": len(selected),
                "ok": len(selected) - refine_failed,
                "failed": refine_failed,
            }
        )
    steps.append({"step": "plan_curriculum", "rows_in": copies, "ok": len(curriculum), "failed": 0})

    mfd_values = [float(r["mfd"]) for r in pool if r.get("mfd") is not None]
    # integer grades: one bin per point; expected (continuous) grades: bins of a quarter point
    width = 1.0 if all(float(v).is_integer() for v in mfd_values) else 0.25
    histogram = Counter(_bin(v, width) for v in mfd_values)
    mfd = {
        "count": len(mfd_values),
        "mean": statistics.fmean(mfd_values) if mfd_values else None,
        "median": statistics.median(mfd_values) if mfd_values else None,
        "min": min(mfd_values) if mfd_values else None,
        "max": max(mfd_values) if mfd_values else None,
        "histogram": {str(k): histogram[k] for k in sorted(histogram)},
    }
    eligible = [r for r in pool if r["difficulty"] in (HARD, EASY)]
    before = Counter(r["task"] for r in eligible)
    after: Counter = Counter()
    task_sources: dict[str, dict[str, int]] = {}
    for row in selected:
        count = int(row.get("copies") or 0)
        after[row["task"]] += count
        sources = task_sources.setdefault(str(row["task"]), {"seed": 0, "generated": 0, "copies": 0})
        sources["generated" if row.get("origin") == "expansion" else "seed"] += 1
        sources["copies"] += max(count - 1, 0)

    rounds = []
    splits = sorted({r["split"] for r in curriculum}, key=split_order)
    for split in splits:
        rows = [r for r in curriculum if r["split"] == split]
        fresh = [r for r in rows if not r.get("carried")]
        hard = sum(1 for r in fresh if r["difficulty"] == HARD)
        number = rows[0]["round"]
        rounds.append(
            {
                "split": split,
                "rows": len(rows),
                "hard": hard,
                "easy": len(fresh) - hard,
                "carried": len(rows) - len(fresh),
                "hard_share_target": hard_share[number - 1] if number >= 1 else None,
                "hard_share": hard / len(fresh) if fresh and number >= 1 else None,
                "refined": sum(1 for r in rows if r.get("response_source") == "refined"),
                "reviewed": sum(1 for r in rows if r.get("response_source") == "review"),
            }
        )
    judge_failures = failures["judge grade of teacher"] + failures["judge grade of student"]
    not_graded = sum(
        1 for r in pool for c in ("teacher_score_error", "student_score_error") if _not_graded(r.get(c))
    )
    return {
        # grades never asked for: the answer had failed (no judge call paid for nothing)
        "not_graded": not_graded,
        "steps": steps,
        "parse_failures": failures,
        "parse_failure_reasons": failure_reasons,
        "judge_parse_failures": judge_failures,
        "difficulty": {k: difficulty[k] for k in (HARD, EASY, EXCLUDED)},
        "excluded_reasons": dict(
            Counter(str(r["excluded_reason"]) for r in pool if r.get("excluded_reason")).most_common(8)
        ),
        "mfd": mfd,
        "tasks_before": dict(before.most_common()),
        "tasks_after": dict(after.most_common()),
        # per task after re-balancing: distinct seed rows, distinct generated (expansion) rows,
        # and the extra copies up-sampling added
        "task_sources": task_sources,
        "target_mix": target_mix,
        "curriculum": rounds,
        "usage": usage,
        "llm_calls_this_run": int(sum(u["calls"] for u in usage.values())),
    }


def _bin(value: float, width: float) -> float | int:
    """The lower edge of ``value``'s bin (an int for whole-point bins, as before)."""
    edge = math.floor(value / width + 1e-9) * width
    return int(edge) if width == 1.0 else round(edge, 2)


def judging_settings(recipe: Recipe) -> dict[str, Any]:
    """What the summary records of how MFD's grades were read."""
    from tapir.serving.llm_factory import model_id

    return {
        "scoring": recipe.judge_scoring,
        "top_logprobs": recipe.judging.top_logprobs,
        "student": model_id(recipe.student),
    }


def classifier_report(recipe: Recipe) -> dict[str, Any]:
    """Which classifier labelled the tasks and how well it does on rows it did not learn from."""
    if recipe.taxonomy.classifier == "offline":
        from tapir.pipelines.offline_classifier import fit

        fitted, _ = fit(recipe.taxonomy.offline, recipe.taxonomy.labels, Path(recipe.cache_dir), recipe.seed)
        return fitted.report()  # cached by the step that used it: no re-fit
    spec = recipe.role(recipe.taxonomy.classifier_role)
    return {"kind": "llm", "role": recipe.taxonomy.classifier_role, "model": spec.model}


def print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="Rows per step", title_justify="left")
    for column in ("step", "in", "ok", "failed", "note"):
        table.add_column(column, justify="right" if column in ("in", "ok", "failed") else "left")
    for step in summary["steps"]:
        table.add_row(
            step["step"], str(step["rows_in"]), str(step["ok"]), str(step["failed"]), step.get("note", "")
        )
    console.print(table)

    failures = Table(title="Parse failures (excluded from selection, never scored)", title_justify="left")
    failures.add_column("output")
    failures.add_column("failed", justify="right")
    failures.add_column("top reasons")
    for what, count in summary["parse_failures"].items():
        reasons = summary["parse_failure_reasons"].get(what, {})
        failures.add_row(what, str(count), "; ".join(f"{k} ×{v}" for k, v in list(reasons.items())[:3]))
    console.print(failures)

    mfd = summary["mfd"]
    if mfd["count"]:
        bins = "  ".join(f"{k}:{v}" for k, v in mfd["histogram"].items())
        console.print(
            f"[bold]MFD[/] over {mfd['count']} rows: mean {mfd['mean']:.2f}, median {mfd['median']:.1f}, "
            f"range {mfd['min']:g}..{mfd['max']:g}; histogram {bins}"
        )
    console.print(judging_line(summary.get("judging")))
    if line := classifier_line(summary.get("classifier")):
        console.print(line)
    diff = summary["difficulty"]
    console.print(
        f"[bold]Difficulty[/]: {diff['hard']} hard, {diff['easy']} easy, {diff['excluded']} excluded"
    )
    if line := decontamination_line(summary.get("decontamination")):
        console.print(f"[bold]Decontamination[/]: {line}")
    spend = summary.get("spend") or {}
    if spend.get("roles"):
        per_role = ", ".join(f"{role} ${usd:,.2f}" for role, usd in spend["roles"].items())
        cap = f" of the ${spend['max_spend_usd']:g} cap" if spend.get("max_spend_usd") else ""
        console.print(
            f"[bold]Spend[/] this run: ${spend['usd']:,.2f}{cap} ({per_role}; cached answers are free)"
        )
    usage = summary.get("usage") or {}
    batches = {role: int(u["batches"]) for role, u in usage.items() if u.get("batches")}
    if batches:
        shown = ", ".join(f"{role} {n} batches" for role, n in batches.items())
        console.print(f"[bold]Batch API[/]: {shown}")

    tasks = Table(title="Task histogram before / after re-balancing", title_justify="left")
    columns, rows = task_table(summary)
    for column in columns:
        tasks.add_column(column, justify="left" if column in ("task", "expansion asked") else "right")
    for row in rows:
        tasks.add_row(*[str(cell) for cell in row])
    console.print(tasks)

    rounds = Table(title="Curriculum", title_justify="left")
    for column in ("split", "rows", "hard", "easy", "carried", "hard share (target)", "refined"):
        rounds.add_column(column, justify="left" if column == "split" else "right")
    for row in summary["curriculum"]:
        share = (
            f"{row['hard_share']:.2f} ({row['hard_share_target']:.2f})"
            if row["hard_share"] is not None
            else "-"
        )
        rounds.add_row(
            row["split"],
            str(row["rows"]),
            str(row["hard"]),
            str(row["easy"]),
            str(row["carried"]),
            share,
            str(row["refined"]),
        )
    console.print(rounds)

    applied = describe_applied(summary.get("review"))
    if applied:
        console.print(f"[bold]Review applied[/]: {applied}")

    usage = Table(title="LLM usage this run", title_justify="left")
    columns = (
        "calls",
        "input_tokens",
        "output_tokens",
        "empty_generations",
        "retries",
        "failed_calls",
        "seconds",
    )
    for column in (
        "role",
        "calls",
        "input tokens",
        "output tokens",
        "empty outputs",
        "retries",
        "failed",
        "seconds",
    ):
        usage.add_column(column, justify="left" if column == "role" else "right")
    for role, numbers in sorted(summary["usage"].items()):
        usage.add_row(role, *(f"{numbers.get(k, 0):.0f}" for k in columns))
    if not summary["usage"]:
        usage.add_row("(none: every step came from the cache)", *("0" for _ in columns))
    console.print(usage)
    for role, numbers in sorted(summary["usage"].items()):
        if numbers.get("failed_calls"):
            reasons = ", ".join(
                f"{k} ×{v}" for k, v in sorted((numbers.get("failure_reasons") or {}).items())
            )
            console.print(
                f"[yellow]{role}: {numbers['failed_calls']:.0f} request(s) failed after retries ({reasons}); "
                "never cached: a re-run asks exactly those again[/]"
            )


def plot_summary(summary: dict[str, Any], folder: Path) -> list[Path]:
    """PNG plots of the task mix, the MFD distribution and the curriculum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    labels = sorted(
        set(summary["tasks_before"])
        | set(summary["tasks_after"])
        | {k for k, v in summary["target_mix"].items() if v > 0}
    )
    total_after = sum(summary["tasks_after"].values()) or 1
    total_before = sum(summary["tasks_before"].values()) or 1
    fig, ax = plt.subplots(figsize=(max(8, 0.35 * len(labels)), 4.5))
    xs = range(len(labels))
    ax.bar(
        [x - 0.2 for x in xs],
        [summary["tasks_before"].get(k, 0) / total_before for k in labels],
        0.4,
        label="before re-balancing",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [summary["tasks_after"].get(k, 0) / total_after for k in labels],
        0.4,
        label="after re-balancing",
    )
    ax.scatter(
        list(xs),
        [summary["target_mix"].get(k, 0) for k in labels],
        color="black",
        marker="_",
        s=200,
        label="target share",
        zorder=3,
    )
    ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("share of rows")
    ax.set_title("Task mix before and after re-balancing")
    ax.legend()
    fig.tight_layout()
    paths.append(folder / "task_histogram.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    hist = summary["mfd"]["histogram"]
    edges = [float(k) for k in hist]
    width = 1.0 if all(e.is_integer() for e in edges) else 0.25
    ax.bar(edges, list(hist.values()), width=0.9 * width, align="edge", color="tab:purple")
    ax.set_xlabel("MFD = judge(teacher) - judge(student)")
    ax.set_ylabel("rows")
    ax.set_title("Model Fitting Difficulty")
    fig.tight_layout()
    paths.append(folder / "mfd_histogram.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    rounds = [r for r in summary["curriculum"] if r["split"] != WARMUP]
    if rounds:
        fig, ax = plt.subplots(figsize=(6, 4))
        names = [r["split"] for r in rounds]
        ax.bar(names, [r["easy"] for r in rounds], label="easy")
        ax.bar(names, [r["hard"] for r in rounds], bottom=[r["easy"] for r in rounds], label="hard")
        ax.bar(
            names,
            [r["carried"] for r in rounds],
            bottom=[r["easy"] + r["hard"] for r in rounds],
            label="carried over",
        )
        ax.set_ylabel("examples")
        ax.set_title("Curriculum: hard share per round")
        ax.legend()
        fig.tight_layout()
        paths.append(folder / "curriculum.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
