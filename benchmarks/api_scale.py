"""The data pipeline at Alpaca's size against an OpenAI-compatible API: sustained calls per second,
peak memory, and every fault accounted for.

52,002 synthetic seeds (Alpaca's size) go through the whole ``tapir data`` pipeline (teacher,
student, judge, classifier, expansion, refinement, curriculum) as a user runs it: one CLI
process, every role on one endpoint served by tapir's loopback simulator (``tapir.serving.simulator``)
with 500 ms latency per call, ``max_concurrency`` 64. The target is 0.9 x 64 / 0.5 s = 115.2
calls/s over the whole run, with the peak resident memory of tapir's process tree under 4 GB.
With ``--faults`` the endpoint also answers 10 % of calls with 5xx, 5 % with 429 (+Retry-After)
and lets 2 % hang past the client's timeout: the run must still finish, with every injected
fault either retried or counted as a failed call, and every seed accounted for.

    .venv/bin/python benchmarks/api_scale.py                      # 52,002 seeds, clean endpoint
    .venv/bin/python benchmarks/api_scale.py --faults             # the same with faults
    .venv/bin/python benchmarks/api_scale.py --seeds 2000         # a quick look
    .venv/bin/python benchmarks/api_scale.py --faults --replicas 2  # 2 processes per client step

The simulator runs as its own process (an endpoint the user runs, backend ``openai``), so its
counters survive the run and its CPU is not counted as tapir's memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by a test
from process_memory import PeakMemory  # noqa: E402

ALPACA_SIZE = 52_002
FAULTS = {"rate_5xx": 0.10, "rate_429": 0.05, "retry_after_s": 0.5, "rate_timeout": 0.02, "hang_s": 3600}
VERBS = ["Explain", "Summarize", "Translate into French", "Classify", "Write Python for", "Brainstorm on"]
TOPICS = ["photosynthesis", "a sorting algorithm", "the French revolution", "a family budget", "rainfall"]


def write_seeds(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            instruction = f"{VERBS[i % len(VERBS)]} {TOPICS[(i // len(VERBS)) % len(TOPICS)]} (task {i})."
            handle.write(json.dumps({"instruction": instruction, "input": ""}) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(port: int, latency_ms: float, faults: dict[str, float], log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "tapir.serving.simulator",
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
    ]
    for name, value in faults.items():
        flag = "--" + name.replace("_", "-")
        command += [flag] if value is True else [flag, str(value)]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            headers = {"Authorization": f"Bearer {faults['api_key']}"} if faults.get("api_key") else {}
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=headers, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"simulator did not start (log: {log})")


def recipe(
    work: Path,
    seeds: Path,
    port: int,
    concurrency: int,
    batch_size: int,
    timeout_s: float,
    replicas: int,
    max_retries: int = 6,
) -> Path:
    model = {
        "backend": "openai",
        "model": "sim",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "api_key_env": "TAPIR_SIM_KEY",
        "max_concurrency": concurrency,
        "timeout_s": timeout_s,
        "max_retries": max_retries,
    }
    body = {
        "name": "api-scale",
        "seed": 1,
        "output_dir": str(work / "out"),
        "cache_dir": str(work / "cache"),
        "teacher": model,
        "student": model,
        "judge": model,
        "seeds": {"source": str(seeds), "shuffle": False},
        "pipeline": {"batch_size": batch_size, "replicas": replicas},
    }
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


class InFlight(threading.Thread):
    """Samples the endpoint's requests in flight: where the run leaves the cap unused."""

    def __init__(self, port: int, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.url, self.every_s = f"http://127.0.0.1:{port}/stats", every_s
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        started = time.perf_counter()
        while not self.done.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError):
                in_flight = httpx.get(self.url, timeout=2).json()["in_flight"]
                self.samples.append((time.perf_counter() - started, in_flight))
            self.done.wait(self.every_s)

    def profile(self, buckets: int = 20) -> dict[str, Any]:
        if not self.samples:
            return {}
        end = self.samples[-1][0] or 1.0
        per: list[list[int]] = [[] for _ in range(buckets)]
        for at, value in self.samples:
            per[min(buckets - 1, int(at / end * buckets))].append(value)
        return {
            "mean_in_flight": round(sum(v for _, v in self.samples) / len(self.samples), 1),
            "in_flight_by_twentieth_of_the_run": [round(sum(b) / len(b)) if b else None for b in per],
        }


def run_scale(
    work: Path,
    seeds: int,
    *,
    latency_ms: float = 500.0,
    faults: dict[str, float] | None = None,
    concurrency: int = 64,
    batch_size: int = 256,
    timeout_s: float = 5.0,
    replicas: int = 1,
    max_retries: int = 6,
) -> dict[str, Any]:
    """One ``tapir data`` run against the simulator; what a benchmark or a test checks."""
    work.mkdir(parents=True, exist_ok=True)
    seed_file = write_seeds(work / "seeds.jsonl", seeds)
    port = free_port()
    simulator = start_simulator(port, latency_ms, faults or {}, work / "simulator.log")
    try:
        recipe_file = recipe(work, seed_file, port, concurrency, batch_size, timeout_s, replicas, max_retries)
        env = {**os.environ, "TAPIR_SIM_KEY": "not-a-secret"}
        started = time.perf_counter()
        with (work / "tapir.log").open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tapir.cli", "data", "--recipe", str(recipe_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
            )
            memory, in_flight = PeakMemory(process.pid), InFlight(port)
            memory.start()
            in_flight.start()
            code = process.wait()
            memory.done.set()
            in_flight.done.set()
            memory.join()
            in_flight.join()
        wall = time.perf_counter() - started
        stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    result: dict[str, Any] = {
        "seeds": seeds,
        "replicas": replicas,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "peak_pss_tree_mb": round(memory.peak_pss / 2**20),
        "peak_rss_tree_mb": round(memory.peak_total / 2**20),
        "peak_rss_one_process_mb": round(memory.peak_single / 2**20),
        "processes": memory.peak_processes,
        "simulator": stats,
        **in_flight.profile(),
    }
    summary_file = work / "out" / "summary.json"
    if code == 0 and summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        usage = summary["usage"]
        calls = sum(role["calls"] for role in usage.values())
        result.update(
            calls=calls,
            calls_per_s=round(calls / wall, 1),
            requests=sum(role.get("requests", 0) for role in usage.values()),
            answered=stats["answered"],
            retries=sum(role.get("retries", 0) for role in usage.values()),
            timeout_retries=sum(role.get("timeout_retries", 0) for role in usage.values()),
            injected_timeouts=stats["faults"].get("timeout", 0),
            failed_calls=sum(role.get("failed_calls", 0) for role in usage.values()),
            injected_faults=sum(stats["faults"].values()),
            difficulty=summary["difficulty"],
            excluded_reasons=summary["excluded_reasons"],
            steps=summary["steps"],
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=ALPACA_SIZE)
    parser.add_argument("--latency-ms", type=float, default=500.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--faults", action="store_true", help="10%% 5xx, 5%% 429, 2%% timeouts")
    parser.add_argument(
        "--replicas", type=int, default=1, help="pipeline.replicas (worker processes per LLM step)"
    )
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tapir-api-scale-"))
    load = os.getloadavg()[0]
    result = run_scale(
        work,
        args.seeds,
        latency_ms=args.latency_ms,
        faults=FAULTS if args.faults else None,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        replicas=args.replicas,
    )
    target = 0.9 * args.concurrency / (args.latency_ms / 1000)
    if "requests" in result:  # the cap is on requests in flight; expansion asks n=2 per request
        result["requests_per_s"] = round(result["requests"] / result["wall_s"], 1)
    result.update(
        machine=f"{platform.node()} ({os.cpu_count()} cores)",
        date=time.strftime("%Y-%m-%d %H:%M"),
        load_before=round(load, 2),
        target_calls_per_s=round(target, 1),
        work=str(work),
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
