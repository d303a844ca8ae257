"""A full disk, met where tapir writes: one line naming the disk (before the run where a look at
the free space can tell), no traceback, nothing half-written, nothing of the user's changed.

Each test mounts a tiny tmpfs (tapir's tests run as root in CI) and fills it."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import tiny_recipe_dict
from .test_cli import assert_one_line_error, tapir, write_recipe

pytestmark = pytest.mark.integration

SCRIPTED = {"backend": "scripted", "model": "m"}


@pytest.fixture
def full_disk(tmp_path):
    """A mounted file system with no room left (a few KiB, filled)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        with (mount / "filler").open("wb") as filler, contextlib.suppress(OSError):
            filler.write(b"\0" * (128 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_init_on_a_full_disk_is_one_line_and_leaves_no_empty_file(full_disk):
    result = tapir("init", "--to", full_disk / "default.yaml")
    assert_one_line_error(result, f"init: cannot write {full_disk / 'default.yaml'}: the disk is full")
    assert _files(full_disk) == ["filler"]
    again = tapir("init", "--to", full_disk / "default.yaml")
    assert "exists" not in again.stderr  # no 0-byte leftover that the next init would refuse


def test_a_data_run_whose_output_disk_is_full_is_refused_before_it_starts(tmp_path, full_disk):
    recipe = tiny_recipe_dict(
        tmp_path, output_dir=str(full_disk / "out"), teacher=SCRIPTED, student=SCRIPTED, judge=SCRIPTED
    )
    result = tapir("data", "--recipe", write_recipe(tmp_path, recipe))
    assert_one_line_error(result, f"output_dir: the disk holding {full_disk / 'out'} is full")
    assert _files(full_disk) == ["filler"]


def test_a_data_run_whose_cache_disk_is_full_is_refused_before_it_starts(tmp_path, full_disk):
    recipe = tiny_recipe_dict(
        tmp_path, cache_dir=str(full_disk / "cache"), teacher=SCRIPTED, student=SCRIPTED, judge=SCRIPTED
    )
    result = tapir("data", "--recipe", write_recipe(tmp_path, recipe))
    assert_one_line_error(result, f"cache_dir: the disk holding {full_disk / 'cache'} is full")
    assert not (tmp_path / "out").exists()


def test_a_disk_that_fills_while_tapir_writes_is_named_as_such(full_disk):
    """Past every pre-flight the write itself fails: the CLI's one line says the disk is full,
    for an OSError and for sqlite's own words (the response cache)."""
    import sqlite3

    from tapir.errors import os_error_line

    try:
        (full_disk / "more").write_bytes(b"x" * 4096)
    except OSError as error:
        written = os_error_line(error)
    with pytest.raises(sqlite3.OperationalError) as cache:
        database = sqlite3.connect(full_disk / "cache.db")
        database.execute("create table t (x blob)")
        database.execute("insert into t values (?)", (b"x" * 65536,))
        database.commit()
    assert written is not None and "the disk is full; free some space and run again" in written
    assert "the disk is full" in (os_error_line(cache.value) or "")


def test_a_run_that_met_a_full_disk_or_a_refused_batch_is_told_apart_from_one_to_rerun():
    from tapir.pipelines.run import _batch_refused, _disk_full_reason

    usage = {
        "teacher": {"failure_reasons": {"HTTP 500": 2}},
        "judge": {"failure_reasons": {"OperationalError: database or disk is full": 3}},
    }
    assert _disk_full_reason(usage) == "judge: OperationalError: database or disk is full"
    assert _batch_refused(usage) is None
    usage["judge"]["failure_reasons"] = {"batch API refused: create the batch: HTTP 400: bad model": 4}
    assert _batch_refused(usage) == "judge: batch API refused: create the batch: HTTP 400: bad model"
    assert _disk_full_reason(usage) is None
