"""The dataset card (README.md) of a run: ``templates/dataset_card.md.jinja`` filled with the
run's real figures by huggingface_hub's ``DatasetCard.from_template``.

Its YAML header declares the splits, so ``datasets.load_dataset(<output folder>)`` and the
Hub viewer read the files directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCardData

from tapir.manifest import scrub
from tapir.publishing.summary_text import classifier_line, decontamination_line, judging_line, task_table
from tapir.recipe import Recipe
from tapir.stage_contract import (
    EXPANSIONS,
    POOL,
    SELECTED,
    DataRun,
    curriculum_splits,
    is_curriculum_split,
)

#: The card templates (Jinja, rendered by huggingface_hub), as distilabel keeps its own.
TEMPLATES = Path(__file__).with_name("templates")


def data_files(recipe: Recipe, summary: dict[str, Any]) -> list[str]:
    """Every data file a run writes, relative to its folder."""
    tables = [*curriculum_splits(recipe.curriculum.rounds), SELECTED, POOL]
    if summary["steps"] and any(s["step"] == "expand_instructions" and s["ok"] for s in summary["steps"]):
        tables.append(EXPANSIONS)
    return [DataRun.relative(name) for name in tables]


def _header(recipe: Recipe, files: list[str]) -> DatasetCardData:
    """huggingface_hub's card metadata: configs for exactly ``files`` (the curriculum splits,
    then one config per other table), tags, licence."""
    stems = [Path(f).stem for f in files]
    curriculum = [s for s in stems if is_curriculum_split(s)]
    configs: list[dict[str, Any]] = []
    if curriculum:
        configs.append(
            {
                "config_name": "curriculum",
                "default": True,
                "data_files": [{"split": s, "path": DataRun.relative(s)} for s in curriculum],
            }
        )
    for stem in (SELECTED, POOL, EXPANSIONS):
        if stem in stems:
            configs.append(
                {"config_name": stem, "data_files": [{"split": "train", "path": DataRun.relative(stem)}]}
            )
    return DatasetCardData(
        configs=configs,
        tags=["tapir", "distillation", "instruction-tuning", "curriculum", "distilabel", "synthetic"],
        task_categories=["text-generation"],
        license=recipe.seeds.license,
    )


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _review_section(summary: dict[str, Any], agreements: dict[str, dict[str, Any]]) -> str:
    from tapir.review.answers import agreement_markdown
    from tapir.review.corrections import describe_applied

    parts = []
    applied = describe_applied(summary.get("review"))
    if applied:
        parts.append(f"Reviewers' decisions applied to this data: {applied}.")
    for split, report in sorted(agreements.items()):
        parts.append(agreement_markdown(report, f"Review of {split}"))
    if not parts:
        return "No human review has been pulled for this run (`tapir review push`, then `tapir review pull`)."
    return "\n\n".join(parts)


def _cost_section(summary: dict[str, Any]) -> str:
    """Calls, tokens and spend per role in the run that wrote this data (cached answers are free)."""
    usage = summary.get("usage") or {}
    spend = summary.get("spend") or {}
    rows = [
        [
            role,
            int(u.get("calls", 0)),
            int(u.get("batches", 0)),
            f"{int(u.get('input_tokens', 0)):,}",
            f"{int(u.get('output_tokens', 0)):,}",
            f"${spend['roles'][role]:,.2f}" if role in spend.get("roles", {}) else "not priced",
        ]
        for role, u in sorted(usage.items())
    ]
    if not rows:
        return "Every answer came from the cache: this run made no LLM call."
    line = f"Spent in this run: ${spend.get('usd', 0):,.2f}"
    if spend.get("max_spend_usd"):
        line += f" (cap ${spend['max_spend_usd']:g})"
    table = markdown_table(["role", "calls", "API batches", "input tokens", "output tokens", "spend"], rows)
    return f"{table}\n\n{line}; answers served from the cache cost nothing and are not counted."


def _plots(plots: list[str]) -> str:
    titles = {
        "task_histogram": "Task mix before and after re-balancing",
        "mfd_histogram": "MFD distribution",
        "curriculum": "Curriculum",
    }
    return "\n".join(f"![{titles.get(Path(p).stem, Path(p).stem)}]({p})" for p in plots)


def render_card(
    recipe: Recipe,
    summary: dict[str, Any],
    manifest: dict[str, Any],
    files: list[str] | None = None,
    agreements: dict[str, dict[str, Any]] | None = None,
    plots: list[str] | None = None,
) -> str:
    """The card for ``files`` (default: every data file of the run)."""
    files = files if files is not None else data_files(recipe, summary)
    plots = plots if plots is not None else list(summary.get("plots") or [])
    model_rows = [[role, m["backend"], m["model"]] for role, m in manifest["models"].items()]
    classifier = manifest["models"].get(recipe.taxonomy.classifier_role)
    if classifier:
        model_rows.append(
            [
                f"task classifier (the {recipe.taxonomy.classifier_role}'s model)",
                classifier["backend"],
                classifier["model"],
            ]
        )
    models = markdown_table(["role", "backend", "model"], model_rows)
    steps = markdown_table(
        ["step", "rows in", "ok", "failed", "note"],
        [[s["step"], s["rows_in"], s["ok"], s["failed"], s.get("note", "")] for s in summary["steps"]],
    )
    tasks = markdown_table(*task_table(summary))
    rounds = markdown_table(
        [
            "split",
            "rows",
            "hard",
            "easy",
            "carried",
            "hard share (target)",
            "refined responses",
            "reviewer fixes",
        ],
        [
            [
                r["split"],
                r["rows"],
                r["hard"],
                r["easy"],
                r["carried"],
                "-" if r["hard_share"] is None else f"{r['hard_share']:.2f} ({r['hard_share_target']:.2f})",
                r["refined"],
                r.get("reviewed", 0),
            ]
            for r in summary["curriculum"]
        ],
    )
    failures = markdown_table(
        ["LLM output", "parse failures"], [[k, v] for k, v in summary["parse_failures"].items()]
    )
    mfd = summary["mfd"]
    mfd_line = (
        f"{mfd['count']} rows graded; mean {mfd['mean']:.2f}, median {mfd['median']:.1f}, "
        f"range {mfd['min']:g} to {mfd['max']:g}"
        if mfd["count"]
        else "no row could be graded"
    )
    file_rows = markdown_table(
        ["file", "rows"], [[f, manifest["files"].get(f, {}).get("rows", "-")] for f in files]
    )
    from huggingface_hub import DatasetCard

    card = DatasetCard.from_template(
        _header(recipe, files),
        template_path=str(TEMPLATES / "dataset_card.md.jinja"),
        name=recipe.name,
        description=recipe.description,
        delta=f"{recipe.difficulty.delta:g}",
        rounds=recipe.curriculum.rounds,
        files_table=file_rows,
        models_table=models,
        hard_shares=", ".join(f"{s:.2f}" for s in recipe.curriculum.hard_share),
        carry_over=f"{recipe.curriculum.carry_over:g}",
        warmup_size=recipe.curriculum.warmup_size,
        rounds_table=rounds,
        steps_table=steps,
        classifier_line=classifier_line(summary.get("classifier")),
        tasks_table=tasks,
        mfd_line=mfd_line,
        mfd_histogram=mfd["histogram"],
        judging_line=judging_line(summary.get("judging")),
        plots=_plots(plots),
        failures_table=failures,
        judge_parse_failures=summary["judge_parse_failures"],
        decontamination=decontamination_line(summary.get("decontamination")) or "Not run for this dataset.",
        cost=_cost_section(summary),
        review=_review_section(summary, agreements or {}),
        licence=recipe.seeds.license or "not stated in the recipe (check the seed source's licence)",
        recipe_hash=manifest["recipe_hash"],
        seed=recipe.seed,
    )
    return str(card) + "\n"


def write_card(
    path: Path, recipe: Recipe, summary: dict[str, Any], manifest: dict[str, Any], **kwargs: Any
) -> None:
    path.write_text(scrub(render_card(recipe, summary, manifest, **kwargs)), encoding="utf-8")
