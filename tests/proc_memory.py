"""Peak resident memory of process trees on Linux (/proc), sampled in a thread: what a SuperLink and each
SuperNode hold with everything they started (SuperExec, ServerApp, ClientApps, fedfit's warm worker).
The process table, trees and PSS come from ``fedfit.bench.memory``.

``Sampler(roots)``: ``roots()`` returns {label: root pid} at each sample (a restarted SuperNode's new
process under the same label). Every ``every`` seconds each label's tree (the root and all its
descendants by parent pid) is summed, as resident memory (RSS: what the tree would hold on a machine of
its own, shared libraries counted whole) and as proportional set size (PSS: shared pages split between
the processes that map them, so the trees' sums add up to this machine's use); ``peak_tree`` and
``peak_tree_pss`` keep the largest sums seen (MB). Each process's own peak RSS (VmHWM, exact: the
kernel's high-water mark) is kept by kind (flower-superlink, flower-supernode, flwr-serverapp,
flwr-clientapp, fedfit warm-worker, ...).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from fedfit.bench.memory import cmdline, descendants, process_table, pss_bytes

KINDS = ("warm-worker", "fedfit supernode", "flower-superlink", "flower-supernode", "flwr-serverapp",
         "flwr-clientapp", "flower-superexec", "flwr-superexec")


def kind_of(pid: int) -> str | None:
    """The Flower or fedfit program a process runs, by its command line (None for anything else)."""
    text = cmdline(pid)
    kind = next((k for k in KINDS if k in text), None)
    return {"warm-worker": "fedfit warm-worker", "fedfit supernode": "flower-supernode"}.get(kind, kind)


def status_mb(pid: int, key: str) -> float:
    """``key`` (VmRSS, VmHWM) of /proc/PID/status in MB; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


class Sampler:
    def __init__(self, roots: Callable[[], dict[str, int]], every: float = 2.0):
        self.roots, self.every = roots, every
        self.peak_tree: dict[str, float] = {}
        self.peak_tree_pss: dict[str, float] = {}
        self.peak_kind: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        table = process_table()
        for label, root in self.roots().items():
            tree = descendants([root], table)
            self.peak_tree[label] = max(self.peak_tree.get(label, 0.0), sum(status_mb(p, "VmRSS") for p in tree))
            pss = [pss_bytes(p) for p in tree]
            if all(v is not None for v in pss):
                self.peak_tree_pss[label] = max(self.peak_tree_pss.get(label, 0.0), sum(pss) / 2**20)
            for pid in tree:
                kind = kind_of(pid)
                if kind:
                    self.peak_kind[kind] = max(self.peak_kind.get(kind, 0.0), status_mb(pid, "VmHWM"))

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sample()
            except Exception:  # a process gone between reads: the next sample sees the rest
                pass

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
