"""Which engine answers the benchmarks for each evaluated model.

A checkpoint of a student that came from a GGUF (the embedded default) is written back to GGUF
once (the closed loop's re-score wrote the same file) and served by llama.cpp, like every model
of the data pipeline: on this CPU llama.cpp makes about 1.6x batched transformers' output
tokens/s (BENCHMARKS.md, "Evaluation answers"). On GPU machines ``vllm serve`` serves each
model in turn. Other models (a Hub baseline) are answered by batched transformers in-process.
"""

from __future__ import annotations

from pathlib import Path

from tapir.errors import EvaluationError
from tapir.evaluation.models import STUDENT, EvalModel
from tapir.recipe import ModelSpec, Recipe
from tapir.serving.backends import backend_of, checkpoint_serving


def answer_backend(recipe: Recipe, model: EvalModel) -> str:
    """``evaluation.backend`` with ``auto`` decided for this model."""
    from tapir.serving.student import born_from_gguf

    born_gguf = model.kind in ("round", STUDENT) and born_from_gguf(recipe)
    backend = checkpoint_serving(recipe.evaluation.backend, born_gguf)
    if backend is None:
        raise EvaluationError(
            f"evaluation.backend: llamacpp serves models that came from a GGUF; {model.name} "
            f"({model.path}) did not (use transformers or vllm)"
        )
    return backend


def planned_engine(recipe: Recipe, model: EvalModel, backend: str) -> dict | None:
    """What a dry run shows of the engine that will answer for ``model`` (nothing is exported)."""
    if not backend_of(backend).served:
        return None
    path = model.path
    if backend_of(backend).runs_gguf and model.kind != STUDENT:
        checkpoint = Path(model.path)
        path = str(checkpoint.parent / f"{checkpoint.name}-{recipe.training.rescore_quantization}.gguf")
    from tapir.serving.engines import later_engine_plan

    serves = [f"eval_answers:{model.name}"]
    name, devices = f"{backend}:{model.name}", recipe.evaluation.devices
    return later_engine_plan(name, backend, path, serves, recipe.student.max_concurrency, devices)


def answered_by_pipeline_student(recipe: Recipe, model: EvalModel, backend: str) -> bool:
    """The untrained student served as the data pipeline serves it: its own GGUF on the same
    backend, so its engine is shared with the roles that use it."""
    return model.kind == STUDENT and backend == recipe.student.backend and backend_of(backend).runs_gguf


def served_spec(recipe: Recipe, model: EvalModel, backend: str) -> ModelSpec:
    """The model as an engine serves it (the GGUF export is written on first use)."""
    settings = recipe.evaluation
    if not backend_of(backend).runs_gguf:  # vLLM loads the transformers folder
        options = {"dtype": settings.dtype, **settings.backend_options}
        from tapir.evaluation.chat_templates import student_template

        template = student_template(recipe, model)
        return ModelSpec(
            backend=backend,
            model=model.path,
            chat_template=str(template) if template else None,
            context_length=recipe.student.context_length,
            options=options,
            devices=settings.devices,
        )
    from tapir.serving.gguf_export import gguf_for_checkpoint
    from tapir.serving.student import gguf_reference

    reference = gguf_reference(recipe)
    assert reference is not None  # answer_backend checked it
    if answered_by_pipeline_student(recipe, model, backend):
        return recipe.student  # the pipeline's own student engine (shared with roles that use it)
    checkpoint = Path(model.path)
    quantization = recipe.training.rescore_quantization
    if model.kind == STUDENT:
        gguf = reference
    else:
        target = checkpoint.parent / f"{checkpoint.name}-{quantization}.gguf"
        gguf = gguf_for_checkpoint(checkpoint, reference, target, quantization)
    return ModelSpec(
        backend=backend,
        model=str(gguf),
        chat_template=str(_tokenizer_template(checkpoint, gguf)),
        context_length=recipe.student.context_length,
        threads=recipe.student.threads,
        options=dict(settings.backend_options),
        devices=settings.devices,
    )


def _tokenizer_template(checkpoint: Path, gguf: Path) -> Path:
    """The chat template saved with the model's tokenizer, as a file llama.cpp's server reads
    (evaluation never guesses a template)."""
    from tapir.serving.gguf_export import write_chat_template

    try:
        written = write_chat_template(checkpoint, gguf)
    except OSError as exc:
        raise EvaluationError(
            f"evaluation.models: cannot load a tokenizer from {checkpoint} ({exc})"
        ) from None
    if written is None:
        raise EvaluationError(
            f"evaluation.models: {checkpoint} has no chat template saved with its tokenizer"
        )
    return written
