"""tapir outside its clone (integration tier): the project built as a wheel and installed into a
fresh virtual environment finds its recipes, templates and samples as package data, so in an
empty folder `tapir data --dry-run`, `tapir eval --dry-run` and `tapir init` work."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
#: What the wheel is built from (pyproject's package folders and its readme).
SOURCES = ("pyproject.toml", "README.md", "tapir", "pipelines", "training", "evaluation", "recipes")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


@pytest.fixture(scope="module")
def fresh_tapir(tmp_path_factory) -> Path:
    """``bin/tapir`` of a new venv holding only the built wheel; the libraries it imports come
    from the test's environment (a path entry, not its .pth files: no editable install leaks in)."""
    work = tmp_path_factory.mktemp("installed")
    source = work / "source"  # a copy: setuptools writes build/ beside the sources it builds
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=IGNORED)
        else:
            shutil.copy2(REPO / name, source / name)
    wheel_command = ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist")]
    build = subprocess.run(
        [sys.executable, *wheel_command, str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next((work / "dist").glob("tapir_distill-*.whl"))
    install = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return venv / "bin" / "tapir"


def _run(tapir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(tapir), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "COLUMNS": "200"},
    )


def test_an_installed_tapir_plans_data_and_eval_in_an_empty_folder(fresh_tapir, tmp_path):
    where = _run(fresh_tapir, tmp_path, "recipe", "validate", "--recipe", "default")
    assert where.returncode == 0, where.stderr
    located = subprocess.run(
        [fresh_tapir.parent / "python", "-c", "import tapir, tapir.recipes; print(tapir.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(REPO) not in located  # the wheel's copy, not the clone

    data = _run(fresh_tapir, tmp_path, "data", "--recipe", "default", "--dry-run")
    assert data.returncode == 0, data.stderr
    assert "recipe valid; nothing was loaded or called" in data.stdout
    evaluation = _run(fresh_tapir, tmp_path, "eval", "--dry-run")  # the default recipe, by name
    assert evaluation.returncode == 0, evaluation.stderr
    paper = _run(fresh_tapir, tmp_path, "data", "--recipe", "paper-llama2-7b", "--dry-run")
    assert paper.returncode == 0 and "52002 rows" in paper.stdout, paper.stderr
    assert [p.name for p in tmp_path.iterdir()] == []  # a plan writes nothing

    made = _run(fresh_tapir, tmp_path, "init")
    assert made.returncode == 0 and (tmp_path / "default.yaml").is_file(), made.stderr
    edited = (tmp_path / "default.yaml").read_text().replace("limit: 32", "limit: 5")
    (tmp_path / "default.yaml").write_text(edited)
    plan = _run(fresh_tapir, tmp_path, "data", "--recipe", "default.yaml", "--dry-run")
    assert plan.returncode == 0 and ": 5 rows" in plan.stdout, plan.stdout[-2000:]
    again = _run(fresh_tapir, tmp_path, "init")
    assert again.returncode == 2 and again.stderr.startswith("tapir: error: init: default.yaml exists")
    unknown = _run(fresh_tapir, tmp_path, "data", "--recipe", "nope", "--dry-run")
    assert unknown.returncode == 2 and "tapir ships the recipes default, paper-llama2-7b" in unknown.stderr


def test_the_wheel_carries_the_package_data_and_no_development_tooling(fresh_tapir):
    """Every file the installed verbs read at run time is in the wheel (card templates, benchmark
    samples, recipes, prompt templates, accelerate configs); the local Argilla server and the
    tests are not."""
    import zipfile

    wheel = next((fresh_tapir.parents[2] / "dist").glob("tapir_distill-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "tapir/publishing/templates/dataset_card.md.jinja",
        "tapir/publishing/templates/model_card.md.jinja",
        "tapir/benchmark_samples/alpaca_eval/reference_outputs.json",
        "tapir/benchmark_samples/mt_bench/reference_answer/gpt-4.jsonl",
        "tapir/recipes/default.yaml",
        "tapir/serving/backends.py",
        "tapir/commands/distill.py",
    ):
        assert needed in names, needed
    assert any(n.startswith("tapir/pipelines/templates/") for n in names)
    assert any(n.startswith("tapir/training/accelerate/") for n in names)
    assert not [n for n in names if "argilla_local_server" in n or "osmem" in n or n.startswith("tests/")]
