"""Peak resident memory of process trees on Linux (/proc), sampled in a thread: what a SuperLink and each
SuperNode hold with everything they started (SuperExec, ServerApp, ClientApps, fedfit's warm worker).

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

import os
import threading
from pathlib import Path
from typing import Callable

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, resident MB) of every live process."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            out[int(p)] = (int(fields[1]), int(fields[21]) * PAGE_MB)
    return out


def pss_mb(pid: int) -> float | None:
    """Proportional set size (MB): the process's private pages plus its share of pages it shares with others
    (torch's libraries, mapped by every process that imports it) - sums over processes to the machine's
    real use. None where the kernel does not say."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _descendants(root: int, procs: dict[int, tuple[int, float]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        todo += children.get(pid, [])
    return seen


def kind_of(pid: int) -> str | None:
    """The program a process runs, by its command line (None when it is gone or is a shell)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    text = b" ".join(argv).decode(errors="replace")
    for k in ("warm-worker", "flower-superlink", "flower-supernode", "flwr-serverapp", "flwr-clientapp",
              "flower-superexec", "flwr-superexec"):
        if k in text:
            return "fedfit warm-worker" if k == "warm-worker" else k
    return None


def hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
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
        procs = _processes()
        for label, root in self.roots().items():
            tree = _descendants(root, procs)
            self.peak_tree[label] = max(self.peak_tree.get(label, 0.0), sum(procs[p][1] for p in tree))
            pss = [pss_mb(p) for p in tree]
            if all(v is not None for v in pss):
                self.peak_tree_pss[label] = max(self.peak_tree_pss.get(label, 0.0), sum(pss))
            for pid in tree:
                kind = kind_of(pid)
                if kind:
                    self.peak_kind[kind] = max(self.peak_kind.get(kind, 0.0), hwm_mb(pid))

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
