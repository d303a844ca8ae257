"""Shared fixtures. Real data comes from ../shared/data (never copied into the project)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import tapir.pipelines.graph as graph
from tapir.recipe import ModelSpec, recipe_from_dict
from tapir.serving.llm_factory import LLMContext, build_llm
from tapir.serving.simulator import EMPTY, MALFORMED

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SELF_INSTRUCT = SHARED_DATA / "seed" / "self_instruct_seed_tasks.jsonl"


def tiny_recipe_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A small, fast recipe writing under tmp_path; sections override top-level keys."""
    base: dict[str, Any] = {
        "name": "tiny",
        "seed": 7,
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        "seeds": {"source": str(SELF_INSTRUCT), "limit": 12},
        "expansion": {"per_hard_seed": 2, "max_hard_seeds": 3},
        "curriculum": {"rounds": 2, "hard_share": [0.4, 0.8], "warmup_size": 2},
        "pipeline": {"batch_size": 4},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged = copy.deepcopy(base[key])
            merged.update(value)
            base[key] = merged
        else:
            base[key] = value
    return base


def shared_mt_bench(per_category: int = 1, max_new_tokens: int = 8) -> dict[str, Any]:
    """``evaluation.mt_bench`` on the real MT-Bench files in the shared data, a few questions."""
    mt = SHARED_DATA / "mt_bench"
    return {
        "questions": str(mt / "question.jsonl"),
        "judge_prompts": str(mt / "judge_prompts.jsonl"),
        "reference_answers": str(mt / "reference_answer" / "gpt-4.jsonl"),
        "per_category": per_category,
        "max_new_tokens": max_new_tokens,
    }


@pytest.fixture(scope="session")
def embedded_student(tmp_path_factory) -> tuple[Path, Path]:
    """(cache folder, folder): the embedded GGUF converted once per session to a transformers
    model (about a minute on 2 cores), for every slow test that needs it."""
    from tapir.serving.embedded_student import materialize_embedded_student

    cache = tmp_path_factory.mktemp("embedded-student")
    return cache, materialize_embedded_student(cache)


@pytest.fixture
def shared_data() -> Path:
    if not SELF_INSTRUCT.is_file():
        pytest.fail(f"shared data missing: {SHARED_DATA} (tests read the real data from there)")
    return SHARED_DATA


# --- the scripted pipeline (integration tier) ----------------------------------------------------


@pytest.fixture
def scripted(monkeypatch):
    """Every role is served by tapir's scripted simulator (one loopback engine, canned answers)
    instead of a real model, except a transformers model given as an existing folder (a trained
    tiny student): that one is real."""

    def build(spec: ModelSpec, role: str, context: LLMContext, **kwargs):
        if not (spec.backend == "transformers" and Path(spec.model).is_dir()):
            spec = ModelSpec(backend="scripted", model=f"{role}-{spec.model}")
        return build_llm(spec, role, context, **kwargs)

    monkeypatch.setattr(graph, "build_llm", build)


LABELS = ["Math", "Writing", "Code Generation", "Others"]


def seed_file(tmp_path):
    rows = [{"instruction": f"Solve math problem number {i} carefully."} for i in range(8)]
    rows += [{"instruction": f"Write a short poem about topic {i}."} for i in range(8)]
    rows += [{"instruction": f"{MALFORMED} request number {i} for the judge."} for i in range(2)]
    rows += [{"instruction": f"{EMPTY} request number {i} for the teacher."} for i in range(2)]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def make_recipe(tmp_path: Path, **sections: Any):
    sections.setdefault("seeds", {"source": seed_file(tmp_path), "limit": None})
    mix = {"Math": 0.5, "Writing": 0.25, "Code Generation": 0.15, "Others": 0.1}
    data = tiny_recipe_dict(
        tmp_path, taxonomy={"labels": LABELS, "target_mix": mix}, difficulty={"delta": 1.0}, **sections
    )
    return recipe_from_dict(data)


# --- a live Argilla server (review tests) -----------------------------------------------------


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory):
    """$ARGILLA_API_URL (+ $ARGILLA_API_KEY) when set, else a real local server started from
    packages (tools/argilla_local_server.py). In CI a missing server is a failure, not a skip."""
    import importlib.util
    import os

    source = Path(__file__).resolve().parents[1] / "tools" / "argilla_local_server.py"
    spec = importlib.util.spec_from_file_location("argilla_local_server", source)
    argilla_local = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = argilla_local  # its dataclasses look their module up by name
    spec.loader.exec_module(argilla_local)

    if os.environ.get("ARGILLA_API_URL"):
        yield argilla_local.Server(
            url=os.environ["ARGILLA_API_URL"],
            api_key=os.environ.get("ARGILLA_API_KEY", ""),
            workspace=os.environ.get("ARGILLA_WORKSPACE", argilla_local.WORKSPACE),
            reviewer_key=None,
        )
        return
    reason = argilla_local.unavailable()
    if reason:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no Argilla server: {reason}")
    with argilla_local.serve(tmp_path_factory.mktemp("argilla")) as server:
        yield server


# --- a stand-in for the Hugging Face Hub (tapir push) ------------------------------------------


@pytest.fixture
def hub(monkeypatch):
    """huggingface_hub pointed at tests/hub_standin.py for the test; yields what it received."""
    import huggingface_hub.constants as constants

    from tests.hub_standin import serve_hub

    with serve_hub() as state:
        monkeypatch.setattr(constants, "ENDPOINT", state.url)
        yield state


# --- tiers by cost ------------------------------------------------------------------------------

#: Tiers, cheapest first; a test without one is a ``unit`` test. ``make test-quick`` runs
#: unit + integration, ``make test`` (and CI) every tier.
TIERS = ("unit", "integration", "e2e", "slow", "argilla", "vllm", "ray")
#: Tests that must not run beside each other on two xdist workers: the real embedded model's
#: (they share the project cache and its llama.cpp engines, and each wants every core), and
#: the one Argilla server of the session, vLLM's engines (each wants every core), and the Ray
#: cluster a module starts.
SERIAL_GROUPS = {
    "slow": "embedded-model",
    "argilla": "argilla-server",
    "vllm": "vllm-engine",
    "ray": "ray-cluster",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns xdist_group marks into groups
def pytest_collection_modifyitems(session, config, items):
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t)]
        if not tiers:
            item.add_marker(pytest.mark.unit)
        for tier, group in SERIAL_GROUPS.items():
            if tier in tiers:
                item.add_marker(pytest.mark.xdist_group(group))
    if config.getoption("--reverse-modules"):
        modules = list(dict.fromkeys(item.module.__name__ for item in items))
        rank = {name: position for position, name in enumerate(reversed(modules))}
        items.sort(key=lambda item: rank[item.module.__name__])


def pytest_addoption(parser):
    parser.addoption(
        "--reverse-modules",
        action="store_true",
        help="run the test modules in reverse order (the suite must not depend on order)",
    )
