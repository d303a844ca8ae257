"""``tapir train``: the staged curriculum, round by round, resumable, optionally closed-loop.

Each round lives in ``<train_dir>/<round>/``: ``model/`` (the round's final model, the next
round's start), ``checkpoints/`` (while it trains), ``train_log.jsonl`` and ``manifest.json``.
A round's *run key* hashes what determines its result (training settings, seed, chat template,
the round file's bytes, the parent's key). A round whose manifest carries the current key is
skipped; one whose folder was started with the current key resumes from its last checkpoint;
anything else is trained afresh, and with it every later round (their parent key changes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tapir.errors import DataError
from tapir.manifest import (
    library_versions,
    now_utc,
    read_manifest,
    refuse_incomplete,
    sha256_file,
    write_json,
)
from tapir.recipe import Recipe
from tapir.staging import claim_output, mark_output
from tapir.training.closed_loop import RESCORED, rescore
from tapir.training.round_data import WARMUP, check_round_file, parquet_rows
from tapir.training.sft import RoundSpec

RUN_KEY = "run_key"
MANIFEST = "manifest.json"
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
    names = [f"round_{r}" for r in range(1, recipe.curriculum.rounds + 1)]
    warmup = data_dir / "data" / f"{WARMUP}.parquet"
    if recipe.training.warmup_round and parquet_rows(warmup) > 0:
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


def check_data(data_dir: Path, names: list[str], closed_loop: bool) -> None:
    """Every round file the run will need from ``tapir data`` exists and has rows, before any training."""
    manifest = read_manifest(data_dir)
    if manifest is None:
        raise DataError(f"output_dir: no finished data run in {data_dir} (run `make data` first)")
    refuse_incomplete(manifest, data_dir, "training")
    for name in names:
        if closed_loop and name != names[0]:
            continue  # built by the re-score after the previous round
        check_round_file(data_dir / "data" / f"{name}.parquet", name)


def run_training(
    recipe: Recipe,
    console: Console,
    recipe_path: str | None = None,
    closed_loop: bool | None = None,
    callbacks: list[Any] | None = None,
) -> Path:
    """Train every round of ``recipe``'s curriculum; returns the folder of the checkpoints."""
    from tapir.training.model_setup import base_model, preflight, start_model_name, template_file

    closed_loop = recipe.training.closed_loop if closed_loop is None else closed_loop
    data_dir = recipe.resolved_output_dir
    train_dir = recipe.resolved_train_dir
    names = round_names(recipe, data_dir)
    check_data(data_dir, names, closed_loop)
    claim_output(train_dir, "train", "training.output_dir")
    template = template_file(recipe)
    template_sha = hashlib.sha256(template.read_bytes()).hexdigest() if template else "tokenizer"
    start = base_model(recipe)
    preflight(start, recipe)
    parent_key = f"base:{start_model_name(recipe)}"
    mark_output(train_dir, "train")
    (train_dir / "recipe.yaml").write_text(
        yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    mode = "closed loop" if closed_loop else "fixed curriculum"
    console.print(f"[bold]tapir train[/] {recipe.name}: {len(names)} rounds ({mode}) from {start}")

    outcomes = []
    data_source = data_dir
    for index, name in enumerate(names):
        folder = train_dir / name
        if closed_loop and index > 0:
            previous = train_dir / names[index - 1]
            data_source = rescore(recipe, previous / "model", previous / RESCORED, console)
        data_path = data_source / "data" / f"{name}.parquet"
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
    done = read_manifest(spec.folder)
    if done and done.get("key") == key and spec.model_dir.is_dir():
        console.print(f"[dim]{spec.name}: already trained ({spec.model_dir}), skipped[/]")
        return {**done, "status": "skipped"}
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

        metrics = train_round_with_accelerate(recipe, spec, identity)
    else:
        from tapir.training.sft import train_round

        metrics = train_round(recipe, spec, console, callbacks, identity)
    manifest = {
        "stage": "train",
        "round": spec.name,
        "key": key,
        "created": now_utc(),
        "recipe_name": recipe.name,
        "recipe_path": recipe_path,
        "recipe_hash": recipe.fingerprint(),
        "data": data,
        "parent": {"model": spec.start_model, "key": parent_key},
        "model_dir": str(spec.model_dir),
        "training": recipe.training.model_dump(mode="json"),
        "metrics": metrics,
        "elapsed_s": round(time.perf_counter() - began, 1),
        "libraries": library_versions(),
    }
    write_json(spec.folder / MANIFEST, manifest)
    status = "resumed" if metrics.get("resumed_from") else "trained"
    console.print(
        f"[green]{spec.name}[/]: {status}, {metrics.get('global_step')} steps, "
        f"loss {_fmt(metrics.get('first_loss'))} → {_fmt(metrics.get('final_loss'))}, "
        f"{manifest['elapsed_s']:.0f}s → {spec.model_dir}"
    )
    return {**manifest, "status": status}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
