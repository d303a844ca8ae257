"""``launcher: accelerate``: each round runs under ``accelerate launch`` (multi-GPU, DeepSpeed).

The orchestrator (rounds, re-scoring, manifests) stays one process; only the round's training
is handed to accelerate, which starts one worker per device from the recipe's config file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tapir.errors import TrainingError
from tapir.recipe import Recipe
from tapir.training.sft import RoundSpec

JOB = "round_job.json"
METRICS = "metrics.json"


def accelerate_command(recipe: Recipe, job: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(recipe.training.accelerate_config),
        "-m",
        "tapir.training.worker",
        str(job),
    ]


def write_job(recipe: Recipe, spec: RoundSpec, identity: dict[str, Any]) -> Path:
    job = spec.folder / JOB
    payload = {
        "recipe": recipe.model_dump(mode="json"),
        "round": {
            "name": spec.name,
            "data_path": str(spec.data_path),
            "start_model": spec.start_model,
            "folder": str(spec.folder),
        },
        "identity": identity,
    }
    job.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return job


def train_round_with_accelerate(recipe: Recipe, spec: RoundSpec, identity: dict[str, Any]) -> dict[str, Any]:
    config = Path(str(recipe.training.accelerate_config))
    if not config.is_file():
        raise TrainingError(f"training.accelerate_config: file not found: {config}")
    job = write_job(recipe, spec, identity)
    (spec.folder / METRICS).unlink(missing_ok=True)
    code = subprocess.call(accelerate_command(recipe, job))
    if code != 0 or not (spec.folder / METRICS).is_file():
        raise TrainingError(f"{spec.name}: accelerate launch exited with status {code} (see its log above)")
    return json.loads((spec.folder / METRICS).read_text(encoding="utf-8"))
