"""Shared fixtures. Real data comes from ../shared/data (never copied into the project)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def shared_data() -> Path:
    if not SELF_INSTRUCT.is_file():
        pytest.fail(f"shared data missing: {SHARED_DATA} (tests read the real data from there)")
    return SHARED_DATA
