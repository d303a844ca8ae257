"""Outputs are built beside their target and swapped in; what killed runs left is cleared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tapir.errors import DataError
from tapir.run_lock import lock_file_for, release_all
from tapir.staging import (
    OUTPUT_MARKER,
    claim_output,
    foreign_files,
    mark_output,
    open_output,
    output_owner,
    remove_stale,
    staging_dir,
    swap_into_place,
    writing_into,
)


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
    ours.mkdir()
    (ours / "data.parquet").write_text("x")
    mark_output(ours, "data")
    claim_output(ours, "data", "output_dir")  # an earlier data run: may be replaced
    with pytest.raises(DataError, match=r"^training.output_dir: .*ours holds a tapir data run"):
        claim_output(ours, "train", "training.output_dir")
    assert (user / "notes.txt").read_text() == "mine"


def test_a_file_the_user_put_into_a_tapir_folder_is_named_not_replaced(tmp_path):
    ours = tmp_path / "ours"
    (ours / "warmup").mkdir(parents=True)
    (ours / "warmup" / "model.bin").write_text("weights")
    mark_output(ours, "train")
    (ours / "warmup" / "notes.md").write_text("the user's notes")
    with pytest.raises(DataError, match=r"^training.output_dir: .*ours holds files tapir did not write "):
        claim_output(ours, "train", "training.output_dir")
    with pytest.raises(DataError, match=r"warmup/notes\.md"):
        claim_output(ours, "train", "training.output_dir")


def test_marks_that_prove_nothing_are_refused(tmp_path):
    """A manifest-looking file or a marker without the list of files is no proof of ownership."""
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "recipe.yaml").write_text("name: mine\n")  # what tapir train's folder used to be known by
    (legacy / "leaderboard.csv").write_text("model\n")
    for stage, field in (("train", "training.output_dir"), ("eval", "evaluation.output_dir")):
        with pytest.raises(DataError, match="is not a tapir"):
            claim_output(legacy, stage, field)
    old = tmp_path / "old"
    old.mkdir()
    (old / OUTPUT_MARKER).write_text('{"stage": "data"}\n')  # an older tapir's marker
    (old / "notes.md").write_text("mine")
    with pytest.raises(DataError, match="older tapir that did not list its files"):
        claim_output(old, "data", "output_dir")
    assert output_owner(tmp_path / "nothing") is None


def test_a_killed_run_s_files_are_its_own_but_older_files_are_not(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "before.txt").write_text("the user's, from before the run")
    time.sleep(0.05)
    marker = {"stage": "train", "version": 2, "files": []}
    (folder / OUTPUT_MARKER).write_text(json.dumps(marker))
    open_output(folder, "train")  # a run begins ... and is killed before it lists its files
    (folder / "round_1").mkdir()
    (folder / "round_1" / "checkpoint.bin").write_text("written by the killed run")
    assert foreign_files(folder, json.loads((folder / OUTPUT_MARKER).read_text())) == ["before.txt"]
    (folder / "before.txt").unlink()
    claim_output(folder, "train", "training.output_dir")  # what the killed run wrote is tapir's
    with writing_into(folder, "train"):
        (folder / "round_1" / "model.bin").write_text("x")
    marker = json.loads((folder / OUTPUT_MARKER).read_text())
    assert marker["files"] == ["round_1/checkpoint.bin", "round_1/model.bin"] and "open_since" not in marker


def test_a_second_run_on_a_locked_output_is_refused_naming_the_first(tmp_path):
    target = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from tapir.staging import claim_output; "
            f"claim_output(Path({str(target)!r}), 'data', 'output_dir'); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            DataError, match=rf"^output_dir: .*out is in use by another tapir run \(pid {holder.pid}\)"
        ):
            claim_output(target, "data", "output_dir")
    finally:
        holder.kill()
        holder.wait()
    claim_output(target, "data", "output_dir")  # the kernel dropped the dead holder's lock
    release_all()
    assert not lock_file_for(target).exists()  # released locks leave no file behind


def test_a_child_of_the_holder_may_use_what_the_holder_locked(tmp_path):
    """tapir distill's re-score is a child `tapir data`: it works under its parent's locks."""
    target = tmp_path / "out"
    claim = (
        "from pathlib import Path\nfrom tapir.staging import claim_output\n"
        f"claim_output(Path({str(target)!r}), 'data', 'output_dir')\n"
    )
    child = tmp_path / "child.py"
    child.write_text(claim + "print('child ok')\n")
    parent = tmp_path / "parent.py"
    parent.write_text(
        claim + "import subprocess, sys\n"
        f"print(subprocess.run([sys.executable, {str(child)!r}], capture_output=True, text=True).stdout)\n"
    )
    result = subprocess.run([sys.executable, str(parent)], capture_output=True, text=True, timeout=60)
    assert "child ok" in result.stdout, result.stderr
