"""No planted secret in any file a whole run writes: data, train, eval, a dataset push and a model
push (dry runs), each a real `tapir` command. Every credential a user can give lives in an
environment variable the recipe names; the teacher's endpoint requires its key and repeats it in
every error body (a hostile server). Afterwards every file under the run's folders, the cache
and the push folders, and every line the commands printed, is searched for each value."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from .conftest import shared_mt_bench, tiny_recipe_dict
from .test_cli import tapir
from .test_fault_injection import BENCH
from .tiny_student import build_tiny_student

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("secrets-full-run")]

PLANTED = {
    "TEACHER_ENDPOINT_KEY": "planted-teacher-key-7731",  # teacher.api_key_env
    "MY_HUB_CREDENTIAL": "planted-hub-cred-7732",  # hub.token_env
    "HF_TOKEN": "hf_" + "PlantedHfToken7733" * 2,
    "OPENAI_API_KEY": "sk-planted-openai-7734-" + "x" * 8,
    "ARGILLA_API_KEY": "planted-argilla-7735",
}


def test_no_planted_secret_in_anything_a_whole_run_writes_or_prints(tmp_path):
    corpus = [f"Explain topic {i} in two sentences." for i in range(12)] + ["An answer."] * 4
    model = build_tiny_student(tmp_path / "tiny", corpus)
    port = BENCH.free_port()
    endpoint = BENCH.start_simulator(
        port,
        0,
        {"api_key": PLANTED["TEACHER_ENDPOINT_KEY"], "echo_key_in_errors": True, "max_prompt_chars": 2500},
        tmp_path / "simulator.log",
    )
    scripted = {"backend": "scripted", "model": "m"}
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": c}) + "\n" for c in corpus[:12]))
    reference = tmp_path / "reference.json"
    reference.write_text(
        json.dumps([{"instruction": c, "output": "ref", "generator": "r"} for c in corpus[:3]])
    )
    recipe = tiny_recipe_dict(
        tmp_path,
        seeds={"source": str(seeds), "limit": None},
        teacher={
            "backend": "openai",
            "model": "sim",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key_env": "TEACHER_ENDPOINT_KEY",
        },
        student=scripted,
        judge=scripted,
        training={"model": str(model), "max_steps": 1, "max_length": 128, "mfd_student": "base"},
        evaluation={
            "models": ["curriculum"],
            "judge": scripted,
            "published": [],
            "paper_rows": False,
            "alpaca_eval": {"reference": str(reference), "max_new_tokens": 8},
            "mt_bench": shared_mt_bench(),
        },
        hub={"repo_id": "me/tapir-data", "token_env": "MY_HUB_CREDENTIAL"},
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**PLANTED, "HF_HUB_OFFLINE": "1"}
    printed = []
    try:
        for argv in (
            ["data"],
            ["train"],
            ["eval"],
            ["push", "--dry-run", "--to", tmp_path / "dataset-push"],
            ["push", "--dry-run", "--model", "1", "--to", tmp_path / "model-push"],
        ):
            result = tapir(*argv, "--recipe", path, env_extra=env, timeout=900)
            printed.append(result.stdout + result.stderr)
            assert result.returncode == 0, (argv, result.stderr[-3000:])
    finally:
        endpoint.terminate()
        endpoint.wait(timeout=10)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "tiny" not in p.relative_to(tmp_path).parts]
    written = {p.relative_to(tmp_path).as_posix() for p in files}
    assert {"out/manifest.json", "out/recipe.yaml", "out/logs/distilabel.log"} <= written
    assert any(name.startswith("dataset-push/") for name in written)
    assert any(name.startswith("model-push/") for name in written)
    leaks = [
        (p.relative_to(tmp_path).as_posix(), name)
        for p in files
        if p.name != "simulator.log"  # the endpoint's own log (the server knows its key)
        for name, value in PLANTED.items()
        if value.encode() in p.read_bytes()
    ]
    assert not leaks, leaks
    assert not [name for name, value in PLANTED.items() if any(value in text for text in printed)]
    assert os.environ.get("TEACHER_ENDPOINT_KEY") is None  # the test's own process never held it
    assert len(files) > 50, len(files)
