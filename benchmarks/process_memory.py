"""Peak memory of a process and all its children (tapir's whole tree), sampled in a thread.

RSS counts the pages forked workers share with their parent once per process; PSS
(proportional set size) splits each shared page between its sharers, so its sum is the tree's
real footprint. Per-process peaks (keyed by pid and command) show one model copy per model.
"""

from __future__ import annotations

import contextlib
import threading


class PeakMemory(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peak_total = 0  # bytes: RSS summed over the tree
        self.peak_pss = 0  # bytes: PSS summed over the tree
        self.peak_single = 0  # bytes: the largest one process's RSS
        self.peak_processes = 0
        self.peaks: dict[str, float] = {}  # "pid command" -> peak RSS in MiB
        self._labels: dict[int, str] = {}  # pid -> "pid command", read once per process
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            sizes, pss = [], []
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    info = process.memory_full_info()
                    sizes.append(info.rss)
                    pss.append(info.pss)
                    key = self._labels.get(process.pid)
                    if key is None:
                        command = " ".join(process.cmdline()[1:4]) or process.name()
                        key = self._labels[process.pid] = f"{process.pid} {command}"
                    self.peaks[key] = max(self.peaks.get(key, 0.0), info.rss / 2**20)
            self.peak_total = max(self.peak_total, sum(sizes))
            self.peak_pss = max(self.peak_pss, sum(pss))
            self.peak_single = max(self.peak_single, max(sizes, default=0))
            self.peak_processes = max(self.peak_processes, len(sizes))
            self.done.wait(self.every_s)
