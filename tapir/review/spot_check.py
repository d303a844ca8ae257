"""``tapir review push`` / ``tapir review pull``: human spot-checks of a curated round in Argilla.

push: a stratified sample of ``data/<round>.parquet`` becomes an Argilla dataset (created once,
then updated in place: records are upserted by id, reviewers' answers stay).
pull: the submitted answers come back into ``<output>-review/<round>/``: every answer, one
decision per example, and the agreement report (JSON, Markdown, plot). The next ``tapir data``
reads the decisions (see :mod:`tapir.review.corrections`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from tapir.errors import DataError, EndpointError
from tapir.manifest import error_line, now_utc, write_json
from tapir.recipe import Recipe
from tapir.review.answers import agreement, agreement_markdown, answers_from_records, decide
from tapir.review.argilla_client import (
    Connection,
    connect,
    fetch_records,
    find_dataset,
    resolve,
    workspace,
)
from tapir.review.records import (
    QUESTIONS,
    build_record,
    build_settings,
    check_rows,
    dataset_name,
)
from tapir.review.sample import stratified_sample
from tapir.stage_contract import DataRun, ReviewRun, data_run, split_for
from tapir.staging import atomic_file, atomic_folder, claim_output, writing_into

SAMPLE, PUSHED, ANSWERS, DECISIONS, AGREEMENT = (
    ReviewRun.SAMPLE,
    ReviewRun.PUSHED,
    ReviewRun.ANSWERS,
    ReviewRun.DECISIONS,
    ReviewRun.AGREEMENT,
)


def round_rows(recipe: Recipe, split: str) -> list[dict[str, Any]]:
    """The split's rows from the recipe's data run (its manifest read first by the caller: a
    folder that holds no data run is named as such, not as a missing file)."""
    path = DataRun(recipe.resolved_output_dir).split_file(split)
    if not path.is_file():
        raise DataError(f"{path}: no such round file (run `make data` first, or check review.round)")
    rows = pd.read_parquet(path).to_dict("records")
    check_rows(rows, str(path))
    return rows


def _strata_table(sample: list[dict[str, Any]], split: str) -> Table:
    counts: dict[str, int] = {}
    for row in sample:
        counts[row["review_stratum"]] = counts.get(row["review_stratum"], 0) + 1
    table = Table(title=f"review sample of {split}: {len(sample)} records")
    table.add_column("task | difficulty")
    table.add_column("records", justify="right")
    for stratum, n in sorted(counts.items()):
        table.add_row(stratum, str(n))
    return table


def push_review(
    recipe: Recipe, console: Console, round_: int | str | None = None, dry_run: bool = False
) -> Path:
    """Send the round's stratified sample to Argilla; returns the round's review folder."""
    split = split_for(round_ if round_ is not None else recipe.review.round)
    manifest = data_run(recipe.resolved_output_dir)
    rows = round_rows(recipe, split)
    sample = stratified_sample(rows, recipe.review.sample_size, recipe.seed, recipe.review.mfd_edges)
    records = [build_record(row, recipe) for row in sample]
    name = dataset_name(recipe, split)
    console.print(_strata_table(sample, split))
    folder = ReviewRun(recipe.resolved_review_dir).split_dir(split)
    if dry_run:
        console.print(
            f"[bold]dry run[/]: would log {len(records)} records to dataset {name!r} "
            f"(questions: {', '.join(QUESTIONS)})"
        )
        return folder

    claim_output(recipe.resolved_review_dir, "review", "review.output_dir")
    connection = resolve(recipe.review.argilla)
    client = connect(connection)
    dataset = _dataset_for(client, connection, name, build_settings(recipe, split, client))
    try:
        dataset.records.log(records)
    except Exception as error:
        raise EndpointError(f"review: logging records to {name!r} failed ({error_line(error)})") from None

    with writing_into(recipe.resolved_review_dir, "review"):
        with atomic_file(folder / SAMPLE) as partial:
            pd.DataFrame(sample).to_parquet(partial)
        write_json(
            folder / PUSHED,
            {
                "dataset": name,
                "workspace": connection.workspace,
                "api_url": connection.api_url,
                "records": len(records),
                "split": split,
                "pushed": now_utc(),
                "recipe_hash": recipe.fingerprint(),
                # which data run the sample came from (its manifest's recipe hash)
                "data_recipe_hash": manifest.recipe_hash,
            },
        )
    console.print(
        f"[green]logged[/] {len(records)} records to {connection.api_url} "
        f"workspace {connection.workspace!r} dataset {name!r}"
    )
    return folder


def _dataset_for(client: Any, connection: Connection, name: str, settings: Any) -> Any:
    import argilla as rg

    existing = find_dataset(client, connection, name)
    if existing is not None:
        ours = {q.name for q in settings.questions}
        theirs = {q.name for q in existing.settings.questions}
        if ours != theirs:
            raise DataError(
                f"review.dataset: {name!r} already exists in {connection.workspace!r} with other questions "
                f"({', '.join(sorted(theirs))}); choose another review.dataset name"
            )
        return existing
    dataset = rg.Dataset(name=name, workspace=workspace(client, connection), settings=settings, client=client)
    try:
        return dataset.create()
    except Exception as error:
        raise EndpointError(f"review: creating dataset {name!r} failed ({error_line(error)})") from None


ANSWER_COLUMNS = [
    "id",
    "user_id",
    "status",
    "task_label",
    "keep",
    "student_falls_short",
    "refined_better",
    "fix",
    "task",
    "difficulty",
    "mfd",
    "stratum",
]
DECISION_COLUMNS = ["id", "reviewers", "original_task", "task", "label_changed", "rejected", "fix"]


def pull_review(recipe: Recipe, console: Console, round_: int | str | None = None) -> Path:
    """Read the answers back; write answers, decisions and the agreement report beside the round."""
    split = split_for(round_ if round_ is not None else recipe.review.round)
    name = dataset_name(recipe, split)
    claim_output(recipe.resolved_review_dir, "review", "review.output_dir")
    connection = resolve(recipe.review.argilla)
    client = connect(connection)
    dataset = find_dataset(client, connection, name)
    if dataset is None:
        raise DataError(
            f"review: no dataset {name!r} in workspace {connection.workspace!r} "
            "(run `tapir review push` first)"
        )
    records = fetch_records(client, dataset)
    return write_pulled(recipe, split, records, console, source=f"{connection.api_url} / {name}")


def write_pulled(
    recipe: Recipe, split: str, records: list[dict[str, Any]], console: Console, source: str
) -> Path:
    """Answers, decisions and agreement for ``records``, replacing the previous pull atomically."""
    answers = answers_from_records(records)
    decisions = decide(answers)
    report = agreement(answers, decisions, sent=len(records))
    report.update({"split": split, "source": source, "pulled": now_utc()})

    claim_output(recipe.resolved_review_dir, "review", "review.output_dir")
    folder = ReviewRun(recipe.resolved_review_dir).split_dir(split)
    with writing_into(recipe.resolved_review_dir, "review"), atomic_folder(folder) as staging:
        for kept in (SAMPLE, PUSHED):  # what the push left; the pull's own files are replaced
            if (folder / kept).is_file():
                shutil.copy2(folder / kept, staging / kept)
        pd.DataFrame(answers, columns=ANSWER_COLUMNS).to_parquet(staging / ANSWERS)
        pd.DataFrame(decisions, columns=DECISION_COLUMNS).to_parquet(staging / DECISIONS)
        write_json(staging / AGREEMENT, report)
        (staging / "agreement.md").write_text(
            agreement_markdown(report, f"Review of {split}"), encoding="utf-8"
        )
        plot_agreement(report, staging / "agreement.png")
    console.print(Markdown(agreement_markdown(report, f"Review of {split}")))
    console.print(f"[green]wrote[/] {folder} ({len(answers)} answers, {len(decisions)} decided examples)")
    return folder


def plot_agreement(report: dict[str, Any], path: Path) -> Path:
    """Reviewer agreement with the classifier per task label and with the judge per difficulty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_task = report["classifier"]["per_task"]
    per_bucket = report["judge"]["per_difficulty"]
    fig, axes = plt.subplots(1, 2, figsize=(10, max(3.2, 0.35 * len(per_task) + 1.6)), layout="constrained")
    for ax, data, title in (
        (axes[0], per_task, "reviewers agree with the task classifier"),
        (axes[1], per_bucket, "reviewers agree with the judge (hard/easy)"),
    ):
        names = list(data)
        values = [100 * (data[n]["agreement"] or 0.0) for n in names]
        ax.barh(names, values, color="#4c72b0")
        for y, (n, v) in enumerate(zip(names, values)):
            inside = v > 70  # write on the bar when there is no room after it
            ax.text(
                v - 1 if inside else v + 1,
                y,
                f"{v:.0f}% of {data[n]['answers']}",
                va="center",
                ha="right" if inside else "left",
                color="white" if inside else "black",
                fontsize=8,
            )
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of submitted answers")
        ax.set_title(title, fontsize=10)
        if not names:
            ax.text(0.5, 0.5, "no answers to this yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
