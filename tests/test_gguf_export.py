"""Which engine serves a checkpoint in the closed loop, and what the GGUF export refuses."""

import pytest

from tapir.errors import TrainingError
from tapir.recipe import Recipe
from tapir.serving.embedded import embedded_gguf_path
from tapir.serving.gguf_export import export_gguf
from tapir.training.closed_loop import resolved_rescore_backend

from .tiny_student import build_tiny_student

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_student(tmp_path_factory.mktemp("tiny"), ["hello world", "a tiny corpus"] * 4)


def recipe(**overrides) -> Recipe:
    return Recipe.model_validate({"name": "t", **overrides})


def test_auto_serves_a_gguf_born_student_with_llamacpp_and_others_with_transformers(tiny_model):
    assert resolved_rescore_backend(recipe()) == "llamacpp"  # the embedded default
    hf_student = {"backend": "transformers", "model": str(tiny_model)}
    assert resolved_rescore_backend(recipe(student=hf_student)) == "transformers"
    vllm = recipe(student=hf_student, training={"rescore_backend": "vllm"})
    assert resolved_rescore_backend(vllm) == "vllm"


def test_llamacpp_rescore_needs_a_student_that_came_from_a_gguf(tiny_model):
    chosen = recipe(
        student={"backend": "transformers", "model": str(tiny_model)},
        training={"rescore_backend": "llamacpp"},
    )
    with pytest.raises(TrainingError, match=r"^training\.rescore_backend: llamacpp .* GGUF"):
        resolved_rescore_backend(chosen)


def test_export_refuses_a_checkpoint_of_another_architecture(tmp_path, tiny_model):
    reference = embedded_gguf_path(tmp_path / "cache")
    target = tmp_path / "model-Q4_K_M.gguf"
    with pytest.raises(TrainingError, match=r"is a llama model but .* holds gemma3"):
        export_gguf(tiny_model, reference, target)
    assert not target.exists() and not list(tmp_path.glob(".*partial"))  # nothing half-written


def test_export_refuses_an_unknown_quantization(tmp_path, tiny_model):
    with pytest.raises(TrainingError, match="quantization 'Q3' is not one of"):
        export_gguf(tiny_model, tmp_path / "ref.gguf", tmp_path / "out.gguf", "Q3")
