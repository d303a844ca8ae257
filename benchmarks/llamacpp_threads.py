"""llama.cpp's output tokens/s by thread count, on a quiet machine and beside one busy process.

Why tapir's llama.cpp engine gives up a thread for each core other processes keep busy
(``tapir.serving.llamacpp_server.ThreadGovernor``): the embedded GGUF through llama-cpp-python alone,
a few greedy completions per setting, first quiet, then with ``python -c "while True: pass"``.

    .venv/bin/python benchmarks/llamacpp_threads.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [f"Write a short story about a {w}:\n" for w in ("cat", "dog", "ship", "tree", "river", "robot")]


def tokens_per_s(gguf: str, threads: int, batch_threads: int) -> float:
    from llama_cpp import Llama

    llm = Llama(gguf, n_ctx=512, n_threads=threads, n_threads_batch=batch_threads, verbose=False, seed=1)
    llm("warm up", max_tokens=4)
    started, produced = time.perf_counter(), 0
    for prompt in PROMPTS:
        produced += llm(prompt, max_tokens=48, temperature=0)["usage"]["completion_tokens"]
    return produced / (time.perf_counter() - started)


def main() -> None:
    from tapir.serving.embedded import embedded_gguf_path

    gguf = str(embedded_gguf_path(REPO / ".cache" / "tapir"))
    cores = os.cpu_count() or 1
    settings = sorted({(cores, cores), (max(1, cores - 1), cores), (max(1, cores - 1), max(1, cores - 1))})
    results = {"machine": f"{platform.node()} ({cores} cores)", "date": time.strftime("%Y-%m-%d %H:%M")}
    results["load_before"] = round(os.getloadavg()[0], 2)
    for busy in (False, True):
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            time.sleep(0.5)
            for threads, batch in settings:
                key = f"{'busy' if busy else 'quiet'} threads={threads} batch={batch}"
                results[key] = round(tokens_per_s(gguf, threads, batch), 1)
                print(key, results[key], flush=True)
        finally:
            if neighbour is not None:
                neighbour.kill()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
