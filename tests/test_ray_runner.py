"""`pipeline.runner: ray` on a real Ray cluster the test starts on loopback (2 CPUs): the data
pass gives the local runner's parquet files byte for byte, the same usage and parse counts from
steps that ran as Ray actors, and a re-run answered by the response cache; a missing Ray or an
unreachable head is one error line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from tapir.errors import DataError
from tapir.pipelines import ray_runner
from tapir.recipe import recipe_from_dict
from tapir.serving.engines import free_port

from .conftest import LABELS, seed_file, tiny_recipe_dict
from .test_cli import assert_one_line_error, tapir

RAY = Path(sys.executable).with_name("ray")
COUNTED = (
    "calls",
    "requests",
    "input_tokens",
    "output_tokens",
    "empty_generations",
    "retries",
    "failed_calls",
)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on loopback with 2 CPUs; its processes are stopped at the end (only
    this cluster's: they are found by its own temp folder)."""
    port = free_port()
    temp = Path(f"/tmp/tapir-ray-{os.getpid()}")  # short: Ray puts unix sockets under it
    env = {**os.environ, **ray_runner.LOOPBACK_ONLY}
    command = [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    command += ["--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"]
    command += ["--temp-dir", str(temp)]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ours = [p for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]
        for process in ours + [child for p in ours for child in _children(p)]:  # agents: renamed
            with contextlib.suppress(psutil.Error):
                process.kill()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def listening_beyond_loopback(port: int) -> list[str]:
    """Sockets of the Ray head's processes listening on anything but loopback."""
    found = []
    for conn in psutil.net_connections("inet"):
        if conn.status != psutil.CONN_LISTEN or not conn.pid:
            continue
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            continue
        if ("gcs_server" in name or "raylet" in name) and not conn.laddr.ip.endswith("127.0.0.1"):
            found.append(f"{name} {conn.laddr.ip}:{conn.laddr.port}")
    return found


def recipe_file(tmp_path: Path, **pipeline) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tiny_recipe_dict(
        tmp_path,
        name="ray-check",
        seeds={"source": seed_file(tmp_path), "limit": 12},
        taxonomy={
            "labels": LABELS,
            "target_mix": {"Math": 0.5, "Writing": 0.25, "Code Generation": 0.15, "Others": 0.1},
        },
    )
    for role in ("teacher", "student", "judge"):
        data[role] = {"backend": "scripted", "model": f"{role}-scripted"}
    data["pipeline"].update(pipeline)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def parquet_digests(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*.parquet"))
    }


def counts(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    usage = {role: {k: n[k] for k in COUNTED} for role, n in summary["usage"].items()}
    return {"usage": usage, "parse_failures": summary["parse_failures"], "not_graded": summary["not_graded"]}


@pytest.mark.ray
def test_ray_runner_writes_the_local_runners_files_byte_for_byte(tmp_path, ray_head):
    local = recipe_file(tmp_path / "local")
    on_ray = recipe_file(tmp_path / "ray", runner="ray", ray_address=ray_head)

    by_local = tapir("data", "--recipe", local, timeout=600)
    assert by_local.returncode == 0, by_local.stderr
    by_ray = tapir("data", "--recipe", on_ray, timeout=900)
    assert by_ray.returncode == 0, by_ray.stderr

    local_out, ray_out = tmp_path / "local" / "out", tmp_path / "ray" / "out"
    digests = parquet_digests(ray_out)
    assert len(digests) == 6 and digests == parquet_digests(local_out)
    # Usage logs written by steps running as Ray actors add up to what the local processes wrote,
    # retries, empty answers and unparseable answers included.
    assert counts(ray_out) == counts(local_out)
    assert counts(ray_out)["usage"]["teacher"]["retries"] > 0 and counts(ray_out)["parse_failures"]
    assert not listening_beyond_loopback(int(ray_head.rsplit(":", 1)[1]))
    # The console is tapir's: Ray's own worker output stays in its session logs.
    assert "(raylet)" not in by_ray.stdout + by_ray.stderr and "pid=" not in by_ray.stderr

    # distilabel's cache gone, the response cache kept: every step runs on Ray again and every
    # request is answered from the cache that the actors wrote.
    for folder in (tmp_path / "ray" / "cache" / "distilabel").iterdir():
        if folder.is_dir():
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    again = tapir("data", "--recipe", on_ray, timeout=900)
    assert again.returncode == 0, again.stderr
    assert "(0 LLM calls this run)" in again.stdout
    assert parquet_digests(ray_out) == digests


@pytest.mark.integration
def test_an_unreachable_ray_head_is_one_line(tmp_path):
    result = tapir(
        "data", "--recipe", recipe_file(tmp_path, runner="ray", ray_address=f"127.0.0.1:{free_port()}")
    )
    assert_one_line_error(
        result, "pipeline.ray_address: no Ray head answers at 127.0.0.1:", "ray start --head"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.unit
def test_ray_missing_is_named_with_the_install_command(tmp_path, monkeypatch):
    recipe = recipe_from_dict(yaml.safe_load(recipe_file(tmp_path, runner="ray").read_text()))
    real = ray_runner.importlib.util.find_spec
    monkeypatch.setattr(
        ray_runner.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(DataError, match=r"pipeline.runner: ray needs Ray .*tapir-distill\[ray\]"):
        ray_runner.check_ray(recipe)


@pytest.mark.unit
def test_a_local_ray_instance_stays_on_loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")  # put back as it was afterwards
    recipe = recipe_from_dict(yaml.safe_load(recipe_file(tmp_path, runner="ray").read_text()))
    options = ray_runner.init_options(recipe)
    assert options["_node_ip_address"] == "127.0.0.1" and options["log_to_driver"] is False
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


@pytest.mark.integration
def test_the_dry_run_notes_what_this_machine_lacks_for_the_run(tmp_path, monkeypatch):
    from rich.console import Console

    from tapir.pipelines.dry_run import dry_run

    recipe = recipe_from_dict(yaml.safe_load(recipe_file(tmp_path, runner="ray").read_text()))
    monkeypatch.setattr(ray_runner, "ray_missing", lambda: "pipeline.runner: ray needs Ray")
    console = Console(record=True, width=200)
    dry_run(recipe, console)
    assert "note: pipeline.runner: ray needs Ray; a real run here refuses to start" in console.export_text()


@pytest.mark.integration
def test_engines_bind_and_are_dialled_at_the_engine_host(tmp_path):
    from tapir.recipe import ModelSpec
    from tapir.serving.engines import EngineSet

    recipe = recipe_from_dict(yaml.safe_load(recipe_file(tmp_path, engine_host="127.0.0.2").read_text()))
    with EngineSet.for_recipe(recipe, tmp_path / "logs") as engines:
        engine = engines.ensure(ModelSpec(backend="scripted", model="m"), "teacher")
        engines.start()
        assert engine.base_url.startswith("http://127.0.0.2:")
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid == engines.pids()[0]
        }
    port = int(engine.base_url.rsplit(":", 1)[1].split("/")[0])
    assert listening == {("127.0.0.2", port)}
