"""The closed loop: the student just trained becomes the pipeline's student, and the next round
is built from what is still hard for it (METHOD step 3, "later rounds: the previous round's
model").

It is ``tapir data`` again, with the checkpoint as the student. The response cache answers every
teacher, classifier and teacher-grading prompt (their inputs did not change), so the LLM calls of
a re-score are the new student's answers and the judge's grades of them.

The re-score runs as a fresh ``tapir data`` process: distilabel forks its step workers, and a
process that has just trained cannot fork safely (torch's OpenMP pool deadlocks in the child;
CUDA cannot be re-initialised there, which is what in-process vLLM would need).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from rich.console import Console

from tapir.errors import TrainingError
from tapir.recipe import ModelSpec, Recipe

RESCORED = "rescored"


def rescored_recipe(recipe: Recipe, checkpoint: Path, out_dir: Path) -> Recipe:
    """``recipe`` with the checkpoint as student (its own saved chat template) writing to out_dir."""
    student = ModelSpec(
        backend=recipe.training.rescore_backend,
        model=str(checkpoint),
        context_length=recipe.student.context_length,
        seed=recipe.student.seed,
        generation=recipe.student.generation,
        options=dict(recipe.training.rescore_options),
    )
    return recipe.model_copy(update={"student": student, "output_dir": str(out_dir)})


def rescore(recipe: Recipe, checkpoint: Path, out_dir: Path, console: Console) -> Path:
    """Run the data pipeline with ``checkpoint`` as student, once (a finished re-score is kept)."""
    derived = rescored_recipe(recipe, checkpoint, out_dir)
    manifest = out_dir / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["recipe_hash"] == derived.fingerprint():
        console.print(f"[dim]re-score with {checkpoint} already done: {out_dir}[/]")
        return out_dir
    console.print(f"[bold]closed loop[/]: re-scoring the pool with {checkpoint}")
    recipe_file = out_dir.parent / f"{out_dir.name}.recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(derived.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    code = subprocess.call([sys.executable, "-m", "tapir.cli", "data", "--recipe", str(recipe_file)])
    if code != 0 or not manifest.is_file():
        raise TrainingError(f"closed loop: re-scoring with {checkpoint} failed (tapir data exited {code})")
    return out_dir
