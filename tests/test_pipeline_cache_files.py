"""distilabel's cache files are whole or absent: a write cut short (a `kill -9` mid-write) leaves
the previous file, and a pipeline.yaml already cut short by an older run is dropped, not fatal."""

from __future__ import annotations

import distilabel.utils.serialization as serialization
import pytest
import yaml

import tapir.pipelines.local_pipeline  # makes distilabel's writes atomic

from .test_cli import tapir
from .test_ray_runner import parquet_digests, recipe_file


@pytest.mark.unit
def test_a_write_cut_short_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "cache" / "pipeline.yaml"
    serialization.write_yaml(target, {"kept": 1})

    def dies_half_way(data, stream, **kwargs):
        stream.write("distilabel:\n  version: 1.5.3\npipeline:\n  name: cut")
        raise KeyboardInterrupt  # the process ends here

    monkeypatch.setattr(serialization.yaml, "dump", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        serialization.write_yaml(target, {"new": 2})
    monkeypatch.undo()
    assert yaml.safe_load(target.read_text()) == {"kept": 1}

    serialization.write_json(target.with_suffix(".json"), {"a": 1})
    serialization.write_yaml(target, {"next": 3})  # the same file again: whole, nothing beside it
    assert yaml.safe_load(target.read_text()) == {"next": 3}
    assert sorted(p.name for p in target.parent.iterdir()) == ["pipeline.json", "pipeline.yaml"]


@pytest.mark.integration
def test_a_truncated_cached_pipeline_yaml_does_not_stop_the_next_run(tmp_path):
    recipe = recipe_file(tmp_path)
    first = tapir("data", "--recipe", recipe, timeout=600)
    assert first.returncode == 0, first.stderr
    digests = parquet_digests(tmp_path / "out")
    cached = list((tmp_path / "cache" / "distilabel").rglob("pipeline.yaml"))
    assert cached
    for path in cached:  # as a kill in the middle of distilabel's write left it
        path.write_text(path.read_text()[: len(path.read_text()) // 2])

    again = tapir("data", "--recipe", recipe, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert parquet_digests(tmp_path / "out") == digests
