"""The closed loop: the student just trained becomes the pipeline's student, and the next round
is built from what is still hard for it (METHOD step 3, "later rounds: the previous round's
model").

It is ``tapir data`` again, with the checkpoint as the student, served like any model: a
student that came from a GGUF (the embedded one) is written back to GGUF and served by llama.cpp,
so a re-score's answers cost about what the first pass's did; vLLM serves it on GPU clusters.
The response cache answers every teacher, classifier and teacher-grading prompt (their inputs
did not change), so the LLM calls of a re-score are the new student's answers and the judge's grades of them.

The re-score runs as a fresh ``tapir data`` process: distilabel forks its step workers, and a
process that has just trained cannot fork safely (torch's OpenMP pool deadlocks in the child;
CUDA cannot be re-initialised there, which is what in-process vLLM would need).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from rich.console import Console

from tapir.errors import DataError, TrainingError
from tapir.recipe import ModelSpec, Recipe
from tapir.serving.backends import backend_of, checkpoint_serving
from tapir.serving.gguf_export import gguf_for_checkpoint, write_chat_template
from tapir.serving.student import born_from_gguf, gguf_reference
from tapir.stage_contract import MANIFEST, read_data_manifest
from tapir.training.model_setup import template_file

RESCORED = "rescored"


def resolved_rescore_backend(recipe: Recipe) -> str:
    """``training.rescore_backend`` with ``auto`` decided: llama.cpp serves a GGUF-born student's
    checkpoints (about what the first pass's answers cost), transformers the others on CPU."""
    backend = checkpoint_serving(recipe.training.rescore_backend, born_from_gguf(recipe))
    if backend is None:
        raise TrainingError(
            "training.rescore_backend: llamacpp serves checkpoints written back to GGUF, which needs "
            "a student that came from a GGUF (student.backend llamacpp); use transformers or vllm"
        )
    return backend


def rescored_recipe(recipe: Recipe, checkpoint: Path, out_dir: Path) -> Recipe:
    """``recipe`` with the checkpoint as student (its own saved chat template) writing to out_dir.
    For llama.cpp the checkpoint is written back to GGUF first (once per checkpoint)."""
    backend = resolved_rescore_backend(recipe)
    model, template = str(checkpoint), None
    if backend_of(backend).runs_gguf:
        reference = gguf_reference(recipe)
        assert reference is not None  # resolved_rescore_backend checked it
        quantization = recipe.training.rescore_quantization
        target = checkpoint.parent / f"model-{quantization}.gguf"
        model = str(gguf_for_checkpoint(checkpoint, reference, target, quantization))
        template = str(_served_template(recipe, checkpoint, target))
    student = ModelSpec(
        backend=backend,
        model=model,
        context_length=recipe.student.context_length,
        threads=recipe.student.threads,
        seed=recipe.student.seed,
        generation=recipe.student.generation,
        chat_template=template,
        max_concurrency=recipe.student.max_concurrency if backend == recipe.student.backend else None,
        options=dict(recipe.training.rescore_options),
        devices=_student_devices(recipe, backend),
    )
    return recipe.model_copy(update={"student": student, "output_dir": str(out_dir)})


def _student_devices(recipe: Recipe, backend: str) -> list[int] | None:
    """The student's GPUs serve its checkpoints too, where they fit the re-score's options."""
    devices = recipe.student.devices
    options = recipe.training.rescore_options
    if devices is None or backend != recipe.student.backend:
        return None
    wanted = backend_of(backend).gpus_in_options(options)
    return devices if wanted is None or wanted == len(devices) else None


def _served_template(recipe: Recipe, checkpoint: Path, gguf: Path) -> Path:
    """The chat template the checkpoint was trained with, as a file llama.cpp's server can read."""
    chosen = template_file(recipe)
    if chosen is not None:
        return chosen
    written = write_chat_template(checkpoint, gguf)
    if written is None:
        raise TrainingError(f"closed loop: {checkpoint} has no chat template to serve it with")
    return written


def rescore(recipe: Recipe, checkpoint: Path, out_dir: Path, console: Console) -> Path:
    """Run the data pipeline with ``checkpoint`` as student, once (a finished re-score is kept)."""
    derived = rescored_recipe(recipe, checkpoint, out_dir)
    try:
        done = read_data_manifest(out_dir)
    except DataError:  # damaged or from another tapir: re-score again
        done = None
    if done is not None and done.recipe_hash == derived.fingerprint():
        console.print(f"[dim]re-score with {checkpoint} already done: {out_dir}[/]")
        return out_dir
    console.print(f"[bold]closed loop[/]: re-scoring the pool with {checkpoint}")
    recipe_file = out_dir.parent / f"{out_dir.name}.recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(derived.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    code = subprocess.call([sys.executable, "-m", "tapir.cli", "data", "--recipe", str(recipe_file)])
    if code != 0 or not (out_dir / MANIFEST).is_file():
        raise TrainingError(f"closed loop: re-scoring with {checkpoint} failed (tapir data exited {code})")
    return out_dir
