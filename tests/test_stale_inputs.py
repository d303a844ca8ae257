"""Edited input files make a data run stale, as edited recipe settings do (issue 22)."""

from __future__ import annotations

import json

import pytest

from tapir.errors import DataError
from tapir.recipe import recipe_from_dict
from tapir.stage_contract import DataManifest, data_settings, header, input_record, write_manifest
from tapir.training.dry_run import data_status
from tapir.training.rounds import check_data


def _setup(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "Name a colour."}) + "\n")
    recipe = recipe_from_dict(
        {
            "name": "stale",
            "output_dir": str(tmp_path / "run"),
            "seeds": {"source": str(seeds)},
            "curriculum": {"rounds": 1, "hard_share": [0.5]},
        }
    )
    manifest = DataManifest(
        **header("data", recipe, None),
        seed=recipe.seed,
        data_settings=data_settings(recipe),
        inputs=input_record({"seeds.source": seeds}),
    )
    write_manifest(tmp_path / "run", manifest)
    return recipe, seeds


def test_an_edited_seed_file_makes_the_data_stale(tmp_path):
    recipe, seeds = _setup(tmp_path)
    assert data_status(recipe)["status"] == "current"
    seeds.write_text(json.dumps({"instruction": "Name two colours."}) + "\n")
    status = data_status(recipe)
    assert status["status"].startswith("stale: seed file changed"), status
    with pytest.raises(
        DataError, match=r"^seeds.source: .*seeds.jsonl changed since `tapir data` read it; the data is stale"
    ):
        check_data(recipe, tmp_path / "run", ["round_1"], closed_loop=False)
    seeds.unlink()
    assert "was removed" in data_status(recipe)["changed"][0]


def test_review_decisions_pulled_after_the_data_run_make_it_stale(tmp_path):
    recipe, _ = _setup(tmp_path)
    decisions = recipe.resolved_review_dir / "round_1" / "decisions.parquet"
    decisions.parent.mkdir(parents=True)
    decisions.write_bytes(b"not read here")
    status = data_status(recipe)
    assert status["status"].startswith("stale: review decisions changed"), status
