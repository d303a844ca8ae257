"""What a `kill -9` costs in answers asked twice: the window between an endpoint sending an answer
and tapir's client reading it into the response cache.

`tapir data` (40 seeds, three roles on the loopback simulator, 8 requests in flight) is killed
with SIGKILL at random moments, rerun each time, and finally run to the end. The simulator
records when it sent every answer; each answer sent twice is placed against the kill between
its two sends: **after** the kill (the request was in flight; the client was already dead — no
client can keep what it never received) or **before** it, by how long (the window: the answer
was on its way or in the client's socket, not yet in the cache). Run quiet, then beside two
CPU-bound neighbours (this machine has 2 cores).

    python benchmarks/kill_window.py [--kills 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_scale  # the simulator and recipe helpers

REPO = Path(__file__).resolve().parents[1]
SEEDS = 40


def _hog() -> None:
    while True:
        pass


def _start(recipe: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tapir.cli", "data", "--recipe", str(recipe)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "TAPIR_SIM_KEY": "not-a-secret"},
        start_new_session=True,
    )


def one_condition(kills: int, busy: bool, seed: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kill-window-"))
    hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(2 if busy else 0)]
    for hog in hogs:
        hog.start()
    port = api_scale.free_port()
    endpoint = api_scale.start_simulator(port, 20, {}, work / "simulator.log")
    rng = random.Random(seed)
    kill_times: list[float] = []
    try:
        seeds = api_scale.write_seeds(work / "seeds.jsonl", SEEDS)
        recipe = api_scale.recipe(work, seeds, port, concurrency=8, batch_size=8, timeout_s=30.0, replicas=1)
        started = time.perf_counter()
        for _ in range(kills):
            process = _start(recipe, work / "tapir.log")
            time.sleep(rng.uniform(4.0, 12.0 if busy else 8.0))
            if process.poll() is None:
                kill_times.append(time.time())
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
        final = _start(recipe, work / "tapir.log")
        code = final.wait(timeout=1800)
        wall = time.perf_counter() - started
        stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()
        twice = httpx.get(f"http://127.0.0.1:{port}/answered-twice", timeout=10).json()
    finally:
        endpoint.terminate()
        for hog in hogs:
            hog.terminate()
        shutil.rmtree(work, ignore_errors=True)
    before, after = [], 0
    for times in twice.values():
        first, second = times[0], times[1]
        kill = next((k for k in kill_times if first - 1.0 <= k <= second), None)
        if kill is None:
            continue
        if first > kill:
            after += 1  # sent to a client that was already dead
        else:
            before.append(kill - first)
    return {
        "condition": "busy (2 CPU-bound neighbours)" if busy else "quiet",
        "kills": len(kill_times),
        "final_exit": code,
        "answers_sent": stats["answered"],
        "answered_twice": stats["answered_again"],
        "sent_after_the_kill": after,
        "sent_before_the_kill": len(before),
        "window_s_median": round(statistics.median(before), 3) if before else None,
        "window_s_max": round(max(before), 3) if before else None,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [one_condition(args.kills, busy, seed) for seed, busy in enumerate((False, True))]
    for row in results:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
