"""The student every stage starts from, and how its checkpoints are served.

Training starts round 1 from it, evaluation scores it as the ``student`` row, and both the
closed loop and evaluation serve trained checkpoints: a student that came from a GGUF (the
embedded default) is written back to GGUF and served by llama.cpp, others by transformers or
vLLM. Shared here so that no stage imports another stage's code.
"""

from __future__ import annotations

from pathlib import Path

from tapir.errors import TrainingError
from tapir.recipe import Recipe
from tapir.serving.backends import backend_of
from tapir.serving.embedded import EMBEDDED, embedded_gguf_path, embedded_model


def start_model_name(recipe: Recipe) -> str:
    """The model round 1 starts from, as the recipe names it: ``training.model``, else the student's."""
    return recipe.training.model or recipe.student.model


def base_model(recipe: Recipe) -> str:
    """Round 1's starting point as a loadable path or Hub id (embedded: converted once)."""
    name = start_model_name(recipe)
    if name == EMBEDDED:
        from tapir.serving.embedded_student import materialize_embedded_student

        return str(materialize_embedded_student(recipe.cache_dir))
    if (embedded := embedded_model(name)) is not None:  # only the base model converts for training
        raise TrainingError(
            f"training.model: the embedded {name} ships as a GGUF only; to train it set "
            f"training.model to {embedded.hub_id} (the Hub model it was made from)"
        )
    if name.endswith(".gguf"):
        raise TrainingError(
            f"training.model: {name} is a GGUF file; TRL trains transformers models "
            "(set training.model to the Hub id or folder of the same model)"
        )
    looks_local = name.startswith((".", "/", "~"))
    if looks_local and not Path(name).expanduser().is_dir():
        raise TrainingError(f"training.model: model folder not found: {name}")
    return name


def born_from_gguf(recipe: Recipe) -> bool:
    """Whether the trained student came from a GGUF (the embedded one, or a llamacpp student
    trained from the same model's transformers folder)."""
    return start_model_name(recipe) == EMBEDDED or (
        backend_of(recipe.student.backend).runs_gguf and recipe.student.model.endswith(".gguf")
    )


def gguf_reference(recipe: Recipe) -> Path | None:
    """The GGUF the trained student came from (its metadata and tokenizer are the export's)."""
    if start_model_name(recipe) == EMBEDDED:
        return embedded_gguf_path(recipe.cache_dir)
    if born_from_gguf(recipe):
        return Path(recipe.student.model).expanduser()
    return None
