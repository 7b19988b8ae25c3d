"""Peak memory of a process tree as proportional set size (PSS), read from /proc (Linux; no psutil).

PSS counts every resident page divided by the number of processes that map it, so a sum of PSS over a
set of processes is what that set holds in memory, without counting shared libraries or copy-on-write
pages of forked workers once per process (as summed RSS would).

``PssSampler`` is a thread that every ``interval`` seconds (0.2) finds its **members** and sums their
``Pss:`` from ``/proc/PID/smaps_rollup`` (bytes). Reading PSS makes the kernel walk each process's
page tables (tens of ms for a few GB resident), so the sampler also waits at least ``(1 - duty) /
duty`` times the CPU time its last sample used (``duty`` 0.1: at most ~10% of one core). Members are:

* ``root`` (default: this process) and every live descendant of it;
* every process started after the sampler began whose command line matches the regular expression
  ``match`` (e.g. a Ray session directory that names this driver: ``ray_session_pattern``), and every
  live descendant of those - processes that left the root's tree (reparented to init) still count.

Each member is put in a role by ``role_of`` (default ``ray_role``: ``driver`` = the root, ``actors``
= Ray worker processes (``ray::<Class>.<method>``, ``ray::IDLE``, ``default_worker.py``),
``ray_system`` = gcs_server, raylet, dashboard, agents, log monitor and any other process running
Ray's code, ``other`` = the rest). The sampler keeps the peak of the total, the split by role at that
moment, each role's own peak, the same per named phase (``phase(name)``), and CPU seconds
(user + system, from ``/proc/PID/stat``) used by the members of each role.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
ROLES = ("driver", "ray_system", "actors", "other")


@dataclass(frozen=True)
class Proc:
    """One process as /proc/PID/stat shows it: parent, start (clock ticks since boot), CPU ticks."""

    pid: int
    ppid: int
    state: str
    start: int
    cpu_ticks: int


def read_proc(pid: int) -> Proc | None:
    """``/proc/PID/stat`` of ``pid``; None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
        return Proc(pid, int(rest[1]), rest[0].decode(), int(rest[19]), int(rest[11]) + int(rest[12]))
    except (OSError, IndexError, ValueError):
        return None


def process_table() -> dict[int, Proc]:
    """Every live (non-zombie) process of the machine, by pid."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (p := read_proc(int(name))) is not None and p.state not in ("Z", "X"):
            out[p.pid] = p
    return out


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces ("" when gone or a kernel thread)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of ``pid`` in bytes (``Pss:`` of smaps_rollup, or summed over smaps on
    kernels before 4.14); None when the process is gone or unreadable."""
    for name in ("smaps_rollup", "smaps"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                total = sum(int(line.split()[1]) for line in f if line.startswith(b"Pss:"))
            return 1024 * total
        except FileNotFoundError:
            continue
        except (OSError, ValueError, IndexError):
            return None
    return None


def uptime_ticks() -> int:
    """Now, in clock ticks since boot (the unit of ``Proc.start``)."""
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * HZ)


def descendants(roots, table: dict[int, Proc]) -> set[int]:
    """``roots`` (those alive in ``table``) and every process below them."""
    children: dict[int, list[int]] = {}
    for p in table.values():
        children.setdefault(p.ppid, []).append(p.pid)
    out = {r for r in roots if r in table}
    todo = list(out)
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def matching(pattern: str | re.Pattern, since: int, table: dict[int, Proc] | None = None) -> set[int]:
    """Processes started at or after ``since`` (clock ticks since boot) whose command line matches
    ``pattern``, and their descendants."""
    table = process_table() if table is None else table
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    hits = {p.pid for p in table.values() if p.start >= since and rx.search(cmdline(p.pid))}
    return descendants(hits, table)


def ray_session_pattern(driver_pid: int | None = None) -> str:
    """A regular expression for the command lines of the Ray processes that ``driver_pid`` (default:
    this process) started: Ray names each local session ``session_<date>_<time>_<micro>_<driver pid>``
    and passes that directory to gcs_server, raylet, the dashboard and the agents."""
    return rf"session_[0-9_-]+_{driver_pid or os.getpid()}(?![0-9])"


def ray_role(pid: int, cmd: str, root: int) -> str:
    """``driver`` | ``actors`` | ``ray_system`` | ``other`` (see the module docstring)."""
    if pid == root:
        return "driver"
    if cmd.startswith("ray::") and not cmd.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")):
        return "actors"
    if "default_worker.py" in cmd:
        return "actors"
    if cmd.startswith("ray::") or "/ray/" in cmd or "gcs_server" in cmd or "raylet" in cmd:
        return "ray_system"
    return "other"


@dataclass
class Peak:
    """Peak PSS (bytes) of a set of samples: the total, its split by role at that moment, each
    role's own peak, and the members (pid -> role, bytes) at the peak."""

    bytes: int = 0
    split: dict[str, int] = field(default_factory=dict)
    by_role: dict[str, int] = field(default_factory=dict)
    members: dict[int, tuple[str, int]] = field(default_factory=dict)
    at: float | None = None        # seconds after the sampler started

    def add(self, total: int, split: dict[str, int], members: dict[int, tuple[str, int]], at: float) -> None:
        for role, b in split.items():
            self.by_role[role] = max(self.by_role.get(role, 0), b)
        if total > self.bytes:
            self.bytes, self.split, self.members, self.at = total, dict(split), dict(members), at

    def to_dict(self) -> dict:
        return {"peak_pss_bytes": self.bytes, "split_at_peak_bytes": dict(self.split),
                "peak_by_role_bytes": dict(self.by_role), "peak_at_s": self.at,
                "processes_at_peak": len(self.members)}


class PssSampler:
    """Samples the PSS of ``root``'s tree (+ processes matching ``match``) every ``interval`` seconds
    in a thread; ``with PssSampler(...) as s: ...`` or ``start()`` / ``stop()``. ``phase(name)``
    starts a named phase (samples are also attributed to it)."""

    def __init__(self, root: int | None = None, match: str | None = None, interval: float = 0.2,
                 role_of: Callable[[int, str, int], str] = ray_role, duty: float = 0.1):
        self.root = os.getpid() if root is None else int(root)
        self.match = re.compile(match) if match else None
        self.interval, self.role_of, self.duty = float(interval), role_of, float(duty)
        self.since = uptime_ticks()
        self.peak = Peak()
        self.phases: dict[str, Peak] = {}
        self.current: str | None = None
        self.samples = 0
        self.sample_seconds = 0.0      # wall seconds spent sampling
        self.sample_cpu_seconds = 0.0  # CPU seconds the sampling thread used (its own cost)
        self._cpu: dict[tuple[int, int], list] = {}  # (pid, start) -> [role, first ticks, last ticks]
        self._cpu_marks: dict[str, dict[str, float]] = {}
        self._seen: set[tuple[int, int]] = set()  # (pid, start) of every process sampled before
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one sample ---------------------------------------------------------------------------
    def members(self, table: dict[int, Proc] | None = None) -> dict[int, str]:
        """The members now, pid -> role."""
        table = process_table() if table is None else table
        pids = descendants({self.root}, table)
        if self.match is not None:
            pids |= matching(self.match, self.since, table)
        return {p: self.role_of(p, cmdline(p), self.root) for p in pids}

    def sample(self) -> tuple[int, dict[str, int]]:
        """Measure now; returns (total PSS bytes, bytes by role) and records it."""
        t0 = time.perf_counter()
        table = process_table()
        members = self.members(table)
        members = {p: role for p, role in members.items() if not self._mid_fork(p, table, members)}
        sizes = {p: (role, b) for p, role in members.items() if (b := pss_bytes(p)) is not None}
        split = {r: 0 for r in ROLES}
        for role, b in sizes.values():
            split[role] = split.get(role, 0) + b
        total = sum(split.values())
        with self._lock:
            at = t0 - self._t0
            self.peak.add(total, split, sizes, at)
            if self.current is not None:
                self.phases[self.current].add(total, split, sizes, at)
            for p, role in members.items():
                proc = table[p]  # a process older than the sampler counts from its first sample
                first = proc.cpu_ticks if proc.start < self.since else 0
                entry = self._cpu.setdefault((p, proc.start), [role, first, first])
                entry[0], entry[2] = role, proc.cpu_ticks
            self.samples += 1
            self.sample_seconds += time.perf_counter() - t0
        return total, split

    def _mid_fork(self, pid: int, table: dict[int, Proc], members: dict[int, str]) -> bool:
        """Whether ``pid`` is first seen now as a copy of its member parent (same command line): a child
        between fork and exec, whose pages are still the parent's. Read a moment apart, parent and child
        would count those pages twice, so such a process counts from its next sample on (a real fork
        child, still the same command line then, does)."""
        proc = table[pid]
        key = (pid, proc.start)
        first = key not in self._seen
        self._seen.add(key)
        return first and proc.ppid in members and cmdline(pid) == cmdline(proc.ppid)

    # --- CPU ----------------------------------------------------------------------------------
    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used by members of each role since the sampler started (a
        process's time after its last sample is not seen)."""
        out = {r: 0.0 for r in ROLES}
        with self._lock:
            for role, first, last in self._cpu.values():
                out[role] = out.get(role, 0.0) + max(0, last - first) / HZ
        return out

    def phase(self, name: str | None) -> None:
        """Start phase ``name`` (None: no phase); samples once at the boundary so short phases are seen."""
        self.sample()
        cpu = self.cpu_seconds()
        with self._lock:
            if self.current is not None:
                self._cpu_marks[self.current] = {r: cpu[r] - self._cpu_marks[self.current].get(r, 0.0) for r in cpu}
            self.current = name
            if name is not None:
                self.phases[name] = Peak()
                self._cpu_marks[name] = dict(cpu)  # the start; replaced by the phase's use when it ends

    def phase_cpu_seconds(self, name: str) -> dict[str, float]:
        """CPU seconds by role used during a finished phase."""
        return dict(self._cpu_marks.get(name, {}))

    # --- thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.thread_time()
            try:
                self.sample()
            except Exception:  # a process vanishing mid-read must never end the measurement
                pass
            cost = time.thread_time() - t0
            self.sample_cpu_seconds += cost
            self._stop.wait(max(self.interval, cost * (1 - self.duty) / self.duty))

    def start(self) -> "PssSampler":
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Peak:
        """Stop the thread (after one last sample) and close the current phase; returns the overall peak."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.phase(None)
        return self.peak

    def __enter__(self) -> "PssSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def to_dict(self) -> dict:
        """Everything measured, for JSON (bytes, seconds)."""
        span = time.perf_counter() - self._t0
        return {**self.peak.to_dict(), "interval_s": self.interval, "samples": self.samples,
                "mean_interval_s": span / self.samples if self.samples else None,
                "sampling_seconds": self.sample_seconds, "sampling_cpu_seconds": self.sample_cpu_seconds,
                "cpu_seconds_by_role": self.cpu_seconds(),
                "phases": {n: {**p.to_dict(), "cpu_seconds_by_role": self.phase_cpu_seconds(n)}
                           for n, p in self.phases.items()}}
