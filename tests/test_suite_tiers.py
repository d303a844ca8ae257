"""The tiers' serial groups really reach pytest-xdist: the real embedded model's tests share one
project cache (one run per output, locked) and each wants both cores, so they must land on one
worker. Two ways this broke silently: a conftest hook that added the group after xdist had read
the marks, and a pytest release whose node ids xdist can no longer rewrite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]

RECORDING_TEST = """
import json, os, pathlib
import pytest

pytestmark = pytest.mark.{tier}


@pytest.mark.parametrize("n", range(4))
def test_records_where_it_ran(request, n):
    out = pathlib.Path(os.environ["RECORD_DIR"]) / f"{{pathlib.Path(__file__).stem}}-{{n}}.json"
    out.write_text(json.dumps({{"nodeid": request.node.nodeid,
                                "worker": os.environ.get("PYTEST_XDIST_WORKER")}}))
"""


def test_slow_tests_share_one_worker_group(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    # the project's own hooks, as its conftest defines them (tryfirst included)
    (suite / "conftest.py").write_text(
        "from tests.conftest import pytest_addoption, pytest_collection_modifyitems  # noqa: F401\n"
    )
    (suite / "test_slow_tier.py").write_text(RECORDING_TEST.format(tier="slow"))
    (suite / "test_unit_tier.py").write_text(RECORDING_TEST.format(tier="unit"))
    record = tmp_path / "record"
    record.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECORD_DIR": str(record)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup"],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ran = {p.stem: json.loads(p.read_text()) for p in record.glob("*.json")}
    assert len(ran) == 8
    slow = [r for r in ran.values() if "test_slow_tier" in r["nodeid"]]
    unit = [r for r in ran.values() if "test_unit_tier" in r["nodeid"]]
    assert all(r["nodeid"].endswith("@embedded-model") for r in slow), slow
    assert len({r["worker"] for r in slow}) == 1, slow
    assert not any("@" in r["nodeid"] for r in unit), unit
