"""``tapir train --dry-run``: the training plan, checked, with nothing loaded or trained.

This is how paper-scale recipes (multi-GPU, DeepSpeed, vLLM re-scoring) are validated on a
laptop: the rounds, their data, the effective batch and steps, and the exact launch command.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tapir.errors import DataError
from tapir.recipe import Recipe
from tapir.serving.backends import backend_of
from tapir.serving.student import start_model_name
from tapir.stage_contract import WARMUP, DataRun, finished_data_run, round_split, stale_reasons, stale_summary
from tapir.training.closed_loop import resolved_rescore_backend
from tapir.training.regrading import data_round, graded_by, regrade_points
from tapir.training.round_data import parquet_rows


def planned_rounds(recipe: Recipe) -> list[str]:
    names = [round_split(r) for r in range(1, recipe.curriculum.rounds + 1)]
    if recipe.training.warmup_round and recipe.curriculum.warmup_size > 0:
        names.insert(0, WARMUP)
    return names


def data_status(recipe: Recipe) -> dict[str, Any]:
    """What ``tapir train`` would find in the data folder: current, stale (which settings
    changed), or the line ``tapir train`` would refuse it with (none, incomplete, unreadable)."""
    try:
        manifest = finished_data_run(recipe.resolved_output_dir, "training")
    except DataError as error:
        return {"status": f"not usable: {error}"}
    changed = stale_reasons(manifest, recipe)
    if changed:
        return {
            "status": f"stale: {stale_summary(changed)} (make data again, or --allow-stale-data)",
            "changed": changed,
        }
    return {"status": "current"}


def train_dry_run(
    recipe: Recipe, console: Console, closed_loop: bool | None = None, command_line: list[str] | None = None
) -> dict[str, Any]:
    """The plan, loading nothing. ``command_line`` (the ``tapir train`` arguments given) is what
    each machine of a multi-machine config runs, with its ``--machine-rank``."""
    from tapir.training.launch import node_commands, read_cluster

    settings = recipe.training
    closed_loop = settings.closed_loop if closed_loop is None else closed_loop
    devices, machines = 1, 1
    if settings.launcher == "accelerate":
        cluster = read_cluster(Path(str(settings.accelerate_config)))
        devices, machines = cluster.num_processes, cluster.num_machines
    global_batch = settings.per_device_train_batch_size * settings.gradient_accumulation_steps * devices
    start = start_model_name(recipe)
    data = DataRun(recipe.resolved_output_dir)
    status = data_status(recipe)

    console.print(f"[bold]tapir train --dry-run[/] {recipe.name} (recipe hash {recipe.fingerprint()})")
    console.print(
        f"start model: {start}{' (GGUF converted to transformers once)' if start == 'embedded' else ''}; "
        f"checkpoints: {recipe.resolved_train_dir}"
    )
    console.print(
        f"global batch {global_batch} = {settings.per_device_train_batch_size} per device x "
        f"{settings.gradient_accumulation_steps} accumulation x {devices} device(s); lr "
        f"{settings.learning_rate} {settings.lr_scheduler_type}; max_length {settings.max_length}; "
        f"{'LoRA r=' + str(settings.lora.r) if settings.lora.enabled else 'full fine-tuning'}; "
        f"{'bf16' if settings.bf16 else 'fp16' if settings.fp16 else settings.dtype}"
    )
    console.print(f"data: {data.root}: {status['status']}")
    for change in status.get("changed", [])[:5]:
        console.print(f"  changed since it was made: {change}")
    plan_rounds: list[dict[str, Any]] = []
    table = Table(title="Rounds")
    for column in ("round", "data", "rows", "optimizer steps", "MFD graded with"):
        table.add_column(column)
    names = planned_rounds(recipe)
    points = regrade_points(recipe, names, bool(closed_loop))
    graders = graded_by(names, points)
    for index, name in enumerate(names):
        after = data_round(index, points)
        if after is not None:
            source, rows = f"re-scored after {names[after]}", None
        else:
            path = data.split_file(name)
            source = str(path)
            rows = parquet_rows(path) if path.is_file() else None
            if rows is None:
                source += " (not built yet: make data)"
        if settings.max_steps:
            steps = str(settings.max_steps)
        elif rows:
            steps = str(math.ceil(math.ceil(rows / global_batch) * settings.num_train_epochs))
        else:
            steps = f"ceil(rows / {global_batch}) x {settings.num_train_epochs:g} epochs"
        table.add_row(name, source, "?" if rows is None else str(rows), steps, graders[index])
        plan_rounds.append(
            {
                "round": name,
                "data": source,
                "rows": rows,
                "optimizer_steps": steps,
                "graded_by": graders[index],
            }
        )
    console.print(table)
    if points and not closed_loop:
        console.print(
            f"warm-up first: after {names[0]} its checkpoint answers the pool again "
            f"({resolved_rescore_backend(recipe)}), the judge grades those answers, and every round is "
            "built from them (training.mfd_student: base keeps the data pass's grades)"
        )
    if closed_loop:
        console.print(
            f"closed loop: after each round the checkpoint answers the pool again "
            f"({resolved_rescore_backend(recipe)}), the judge grades those answers, and the next round is "
            "built from what is still hard"
        )
    command, machine_lines, per_node = None, [], []
    if settings.launcher == "accelerate":
        job = recipe.resolved_train_dir / "<round>" / "round_job.json"
        per_node = node_commands(recipe, job)
        command = per_node[0]
        console.print("each round runs as: " + command)
    if machines > 1:
        train = shlex.join(command_line or ["tapir", "train", "--recipe", "<recipe>"])
        machine_lines = [train] + [f"{train} --machine-rank {rank}" for rank in range(1, machines)]
        console.print(
            f"{machines} machines, one command each (training folder {recipe.resolved_train_dir} on a "
            "filesystem every machine sees at the same path):"
        )
        for rank, (line, launch) in enumerate(zip(machine_lines, per_node)):
            console.print(f"  machine {rank}: {line}", soft_wrap=True)
            console.print(f"    each round starts there: {launch}", soft_wrap=True)
    console.print("[green]training plan is valid[/] (nothing was loaded or trained)")
    return {
        "stage": "train",
        "recipe": recipe.name,
        "start_model": start,
        "data": {"folder": str(data.root), **status},
        "global_batch": global_batch,
        "devices": devices,
        "closed_loop": bool(closed_loop),
        "rounds": plan_rounds,
        "mfd_student": recipe.training.mfd_student,
        "rescore": rescore_plan(recipe, [names[i - 1] for i in points]),
        "launch_command": command,
        "machines": [
            {"machine_rank": rank, "command": line, "round_launch": launch}
            for rank, (line, launch) in enumerate(zip(machine_lines, per_node))
        ]
        if machines > 1
        else [],
    }


def rescore_plan(recipe: Recipe, after: list[str]) -> list[dict[str, Any]]:
    """What serves each re-score: the checkpoint on the re-score backend, one engine at a time
    (the pass before it has stopped its student engine, and training has released the devices).
    llama.cpp serves the checkpoint written back to GGUF."""
    backend = resolved_rescore_backend(recipe)
    quantization = recipe.training.rescore_quantization
    plans = []
    for name in after:
        checkpoint = recipe.resolved_train_dir / name / "model"
        runs_gguf = backend_of(backend).runs_gguf
        served = checkpoint.parent / f"model-{quantization}.gguf" if runs_gguf else checkpoint
        plans.append(
            {
                "after": name,
                "student": str(served),
                "checkpoint": str(checkpoint),
                "backend": backend,
                "served": backend_of(backend).served,
                "steps": ["respond_student", "respond_student_expanded"],
            }
        )
    return plans
