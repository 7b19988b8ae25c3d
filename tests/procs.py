"""Processes a test started, found through /proc and stopped by process id (never by name)."""
from __future__ import annotations

import os
import signal
import time


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``, or None if it is gone."""
    try:
        rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return rest[0], int(rest[1])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="ignore")
    except OSError:
        return ""


def live(pids) -> set[int]:
    """Those of ``pids`` still running (zombies excluded)."""
    return {p for p in pids if (s := _stat(p)) is not None and s[0] != "Z"}


def all_pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def ray_pids() -> set[int]:
    """Live Ray processes on this machine."""
    keys = ("raylet", "gcs_server", "ray::", "default_worker.py", "ray/dashboard", "ray.util.client", "log_monitor",
            "ray/autoscaler")
    return {p for p in live(all_pids()) if any(k in cmdline(p) for k in keys)}


def descendants(roots) -> set[int]:
    """``roots`` and every live process below them."""
    parent = {p: s[1] for p in all_pids() if (s := _stat(p)) is not None and s[0] != "Z"}
    out, frontier = set(roots) & set(parent), set(roots) & set(parent)
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def stop(pids, grace: float = 10.0) -> set[int]:
    """SIGTERM ``pids`` and their descendants, SIGKILL what is left after ``grace`` s; returns survivors."""
    targets = descendants(pids)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for p in live(targets):
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.time() + wait
        while live(targets) and time.time() < deadline:
            time.sleep(0.2)
        targets |= descendants(live(targets))
    return live(targets)


def wait_gone(pids, seconds: float = 20.0) -> set[int]:
    deadline = time.time() + seconds
    while (left := live(pids)) and time.time() < deadline:
        time.sleep(0.5)
    return left
