"""``tapir train``: the staged curriculum, round by round, resumable, optionally closed-loop.

Each round lives in ``<train_dir>/<round>/``: ``model/`` (the round's final model, the next
round's start), ``checkpoints/`` (while it trains), ``train_log.jsonl`` and ``manifest.json``.
A round's *run key* hashes what determines its result (training settings, seed, chat template,
the round file's bytes, the parent's key). A round whose manifest carries the current key is
skipped; one whose folder was started with the current key resumes from its last checkpoint;
anything else is trained afresh, and with it every later round (their parent key changes).

Before any of that, the data run is read through the stage contract: it must be complete and
made with the data-side settings the recipe has now and from the same input files (the seed file
and every other file it read: ``tapir.stage_contract.stale_reasons``); stale data is refused with
what changed, unless ``allow_stale_data``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tapir.errors import DataError
from tapir.manifest import sha256_file
from tapir.recipe import Recipe
from tapir.stage_contract import (
    MANIFEST,
    WARMUP,
    DataRun,
    RoundManifest,
    TrainRun,
    finished_data_run,
    header,
    read_round_manifest,
    round_split,
    stale_reasons,
    write_manifest,
)
from tapir.staging import claim_output, writing_into
from tapir.training.closed_loop import RESCORED, rescore
from tapir.training.regrading import data_round, graded_by, regrade_points
from tapir.training.round_data import check_round_file, parquet_rows
from tapir.training.sft import RoundSpec

RUN_KEY = "run_key"
# Fields that change where or how often things are written, not what a round learns.
_BOOKKEEPING = {
    "output_dir",
    "keep_checkpoints",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "launcher",
    "accelerate_config",
    "closed_loop",
    "rescore_backend",
    "rescore_options",
    "rescore_quantization",
}


def round_names(recipe: Recipe, data_dir: Path) -> list[str]:
    names = [round_split(r) for r in range(1, recipe.curriculum.rounds + 1)]
    if recipe.training.warmup_round and parquet_rows(DataRun(data_dir).split_file(WARMUP)) > 0:
        names.insert(0, WARMUP)
    return names


def round_key(recipe: Recipe, name: str, data_sha: str, parent_key: str, template_sha: str) -> str:
    payload = {
        "round": name,
        "training": recipe.training.model_dump(mode="json", exclude=_BOOKKEEPING),
        "seed": recipe.seed,
        "data_sha256": data_sha,
        "parent": parent_key,
        "chat_template_sha256": template_sha,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def check_data(
    recipe: Recipe, data_dir: Path, names: list[str], closed_loop: bool, allow_stale_data: bool = False
) -> None:
    """The data run is complete and current, and every round file the run will need exists and
    has rows, before any training."""
    manifest = finished_data_run(data_dir, "training")
    changed = stale_reasons(manifest, recipe)
    if changed and not allow_stale_data:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        what = (
            ""
            if changed[0].endswith(("read it", "ran"))
            else f": changed since `tapir data` wrote {data_dir}"
        )
        raise DataError(
            f"{changed[0]}{more}{what}; the data is stale: run `make data` again "
            "(or `tapir train --allow-stale-data` to train on it as it is)"
        )
    points = regrade_points(recipe, names, closed_loop)
    for index, name in enumerate(names):
        if data_round(index, points) is not None:
            continue  # built by a re-score after an earlier round
        path = DataRun(data_dir).split_file(name)
        check_round_file(path, name)
        if not allow_stale_data:
            check_round_hash(manifest, data_dir, path)


def check_round_hash(manifest: Any, data_dir: Path, path: Path) -> None:
    """The round file is the one ``tapir data`` wrote: its sha256 is the manifest's. A file
    replaced since (by hand, a copy from another run, a disk fault) is named, not trained on."""
    relative = DataRun.relative(path.name.removesuffix(".parquet"))
    entry = (manifest.files or {}).get(relative) or {}
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if not expected:
        raise DataError(
            f"{path}: the data run's manifest ({data_dir / 'manifest.json'}) records no sha256 for it; "
            "run `make data` again (or `tapir train --allow-stale-data` to train on it as it is)"
        )
    if sha256_file(path) != expected:
        raise DataError(
            f"{path}: changed since `tapir data` wrote it (its sha256 is not the one in "
            f"{data_dir / 'manifest.json'}); "
            "run `make data` again (or `tapir train --allow-stale-data` to train on it as it is)"
        )


def run_training(
    recipe: Recipe,
    console: Console,
    recipe_path: str | None = None,
    closed_loop: bool | None = None,
    callbacks: list[Any] | None = None,
    allow_stale_data: bool = False,
) -> Path:
    """Train every round of ``recipe``'s curriculum; returns the folder of the checkpoints."""
    from tapir.serving.student import base_model
    from tapir.training.model_setup import preflight, template_file

    closed_loop = recipe.training.closed_loop if closed_loop is None else closed_loop
    data_dir = recipe.resolved_output_dir
    train_dir = recipe.resolved_train_dir
    claim_output(train_dir, "train", "training.output_dir")  # locked first: one run per folder
    names = round_names(recipe, data_dir)
    check_data(recipe, data_dir, names, closed_loop, allow_stale_data)
    template = template_file(recipe)
    template_sha = hashlib.sha256(template.read_bytes()).hexdigest() if template else "tokenizer"
    start = base_model(recipe)
    preflight(start, recipe)
    from tapir.training.launch import machines_informed

    # nothing is written before every check has passed
    with writing_into(train_dir, "train"), machines_informed(recipe):
        return _train_rounds(recipe, console, recipe_path, closed_loop, callbacks, names, start, template_sha)


def _train_rounds(
    recipe: Recipe,
    console: Console,
    recipe_path: str | None,
    closed_loop: bool,
    callbacks: list[Any] | None,
    names: list[str],
    start: Any,
    template_sha: str,
) -> Path:
    from tapir.serving.student import start_model_name

    data_dir = recipe.resolved_output_dir
    train_dir = recipe.resolved_train_dir
    parent_key = f"base:{start_model_name(recipe)}"
    TrainRun(train_dir).recipe_file.write_text(
        yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    mode = "closed loop" if closed_loop else "fixed curriculum"
    console.print(f"[bold]tapir train[/] {recipe.name}: {len(names)} rounds ({mode}) from {start}")
    points = regrade_points(recipe, names, closed_loop)
    if names and names[-1] != names[0]:
        console.print(f"MFD of the curriculum rounds graded: {graded_by(names, points)[-1]}")

    outcomes = []
    data_source = data_dir
    for index, name in enumerate(names):
        folder = TrainRun(train_dir).round_dir(name)
        if index in points:
            previous = train_dir / names[index - 1]
            data_source = rescore(recipe, previous / "model", previous / RESCORED, console)
        data_path = DataRun(data_source).split_file(name)
        spec = RoundSpec(name=name, data_path=data_path, start_model=str(start), folder=folder)
        rows = check_round_file(data_path, name)  # before hashing: a missing file is one error line
        data = {"path": str(data_path), "sha256": sha256_file(data_path), "rows": rows}
        key = round_key(recipe, name, data["sha256"], parent_key, template_sha)
        outcomes.append(_run_round(recipe, spec, data, key, parent_key, console, callbacks, recipe_path))
        start, parent_key = spec.model_dir, key

    from tapir.training.report import write_training_report

    write_training_report(train_dir, outcomes, console)
    return train_dir


def _run_round(
    recipe: Recipe,
    spec: RoundSpec,
    data: dict[str, Any],
    key: str,
    parent_key: str,
    console: Console,
    callbacks: list[Any] | None,
    recipe_path: str | None,
) -> dict[str, Any]:
    done = read_round_manifest(spec.folder)
    if done and done.key == key and spec.model_dir.is_dir():
        console.print(f"[dim]{spec.name}: already trained ({spec.model_dir}), skipped[/]")
        return {**done.model_dump(mode="json"), "status": "skipped"}
    key_file = spec.folder / RUN_KEY
    started_before = key_file.is_file() and key_file.read_text(encoding="utf-8").strip() == key
    if not started_before:
        shutil.rmtree(spec.folder, ignore_errors=True)  # another recipe or parent trained here
        spec.folder.mkdir(parents=True)
        key_file.write_text(key + "\n", encoding="utf-8")
    (spec.folder / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(spec.model_dir, ignore_errors=True)

    console.print(f"[bold]{spec.name}[/]: {data['rows']} conversations from {spec.data_path}")
    console.print(f"  starts from {spec.start_model}")
    began = time.perf_counter()
    identity = {"round": spec.name, "key": key}
    if recipe.training.launcher == "accelerate":
        from tapir.training.launch import train_round_with_accelerate

        metrics = train_round_with_accelerate(recipe, spec, identity, console)
    else:
        from tapir.training.sft import train_round

        metrics = train_round(recipe, spec, console, callbacks, identity, owner=os.getpid())
    manifest = RoundManifest(
        **header("train", recipe, recipe_path),
        round=spec.name,
        key=key,
        data=data,
        parent={"model": spec.start_model, "key": parent_key},
        model_dir=str(spec.model_dir),
        training=recipe.training.model_dump(mode="json"),
        metrics=metrics,
        elapsed_s=round(time.perf_counter() - began, 1),
    )
    write_manifest(spec.folder, manifest)
    status = "resumed" if metrics.get("resumed_from") else "trained"
    console.print(
        f"[green]{spec.name}[/]: {status}, {metrics.get('global_step')} steps, "
        f"loss {_fmt(metrics.get('first_loss'))} → {_fmt(metrics.get('final_loss'))}, "
        f"{manifest.elapsed_s:.0f}s → {spec.model_dir}"
    )
    return {**manifest.model_dump(mode="json"), "status": status}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
