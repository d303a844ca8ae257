"""The real embedded model (Gemma 3 270M via llama.cpp) through the whole graph, twice."""

import json

import pytest
from rich.console import Console

from tapir.pipelines.run import run_data
from tapir.recipe import recipe_from_dict

from .conftest import tiny_recipe_dict

pytestmark = pytest.mark.slow


def test_embedded_model_end_to_end_then_fully_cached(tmp_path, shared_data):
    recipe = recipe_from_dict(
        tiny_recipe_dict(
            tmp_path,
            seeds={"source": str(shared_data / "seed" / "self_instruct_seed_tasks.jsonl"), "limit": 4},
            teacher={"generation": {"max_new_tokens": 24}},
            student={"generation": {"max_new_tokens": 16}},
            judging={"temperature": 1.0},
            expansion={"per_hard_seed": 1, "max_hard_seeds": 1, "max_new_tokens": 24},
            refinement={"max_new_tokens": 24},
            curriculum={"rounds": 2, "hard_share": [0.5, 1.0], "round_size": 2, "warmup_size": 1},
        )
    )
    out = run_data(recipe, Console(quiet=True))
    summary = json.loads((out / "summary.json").read_text())
    usage = summary["usage"]
    # 4 seeds (+ at most 1 expansion): teacher, student and judge all really ran.
    assert 4 <= usage["student"]["calls"] <= 5
    assert usage["judge"]["calls"] >= 2 * 4 + 4  # two grades + a label per row
    assert usage["teacher"]["output_tokens"] > 0
    # The grammar makes every embedded judge/classifier answer parse.
    assert summary["parse_failures"]["judge grade of teacher"] == 0
    assert summary["parse_failures"]["task label"] == 0
    pool = summary["difficulty"]
    assert pool["hard"] + pool["easy"] + pool["excluded"] >= 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert "gemma-3-270m" in manifest["models"]["teacher"]["model"]
    assert (out / "data" / "round_1.parquet").is_file()

    again = run_data(recipe, Console(quiet=True))
    assert json.loads((again / "summary.json").read_text())["llm_calls_this_run"] == 0
