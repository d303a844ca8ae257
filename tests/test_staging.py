"""Outputs are built beside their target and swapped in; what killed runs left is cleared."""

from __future__ import annotations

import os
import subprocess
import sys

from tapir.staging import remove_stale, staging_dir, swap_into_place


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_runs_leftovers_go_and_a_live_runs_stay(tmp_path):
    target = tmp_path / "out"
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = [tmp_path / f".out.partial-{dead}", tmp_path / f".out.old-{dead}"]
        running = tmp_path / f".out.partial-{live.pid}"
        other = tmp_path / f".other.partial-{dead}"  # another target's: not ours to touch
        for folder in (*stale, running, other):
            (folder / "data").mkdir(parents=True)
        assert sorted(remove_stale(target)) == sorted(stale)
        assert running.is_dir() and other.is_dir() and not any(p.exists() for p in stale)
    finally:
        live.kill()
        live.wait()


def test_swap_replaces_the_target_only_once_the_new_one_is_complete(tmp_path):
    target = tmp_path / "out"
    (target / "old.txt").parent.mkdir()
    (target / "old.txt").write_text("old")
    staging = staging_dir(target)
    assert staging.name == f".out.partial-{os.getpid()}" and not staging.exists()
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    assert (target / "old.txt").is_file()  # untouched while the new one is being built
    swap_into_place(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old copy left


def test_a_stage_writes_only_where_it_wrote_before(tmp_path):
    import pytest

    from tapir.errors import DataError
    from tapir.staging import claim_output, mark_output

    claim_output(tmp_path / "absent", "data", "output_dir")  # absent: fine
    (tmp_path / "empty").mkdir()
    claim_output(tmp_path / "empty", "data", "output_dir")  # empty: fine
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"^output_dir: .*user exists and is not a tapir data folder"):
        claim_output(user, "data", "output_dir")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"^output_dir: .*file is a file"):
        claim_output(tmp_path / "file", "data", "output_dir")
    ours = tmp_path / "ours"
    mark_output(ours, "data")
    (ours / "data.parquet").write_text("x")
    claim_output(ours, "data", "output_dir")  # an earlier data run: may be replaced
    with pytest.raises(DataError, match=r"^training.output_dir: .*ours holds a tapir data run"):
        claim_output(ours, "train", "training.output_dir")
    assert (user / "notes.txt").read_text() == "mine"


def test_folders_written_before_the_marker_are_still_recognised(tmp_path):
    from tapir.staging import output_owner

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text('{"stage": "data"}')
    (tmp_path / "review" / "round_1").mkdir(parents=True)
    (tmp_path / "review" / "round_1" / "push.json").write_text("{}")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text('{"name": "not ours"}')
    assert output_owner(tmp_path / "data") == "data" and output_owner(tmp_path / "review") == "review"
    assert output_owner(tmp_path / "other") is None
