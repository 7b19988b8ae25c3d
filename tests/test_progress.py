"""Progress: live rows with an ETA on a terminal, plain lines otherwise (``fedfit.progress``)."""
import os
import re
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedfit import progress

FEDFIT = str(Path(sys.executable).with_name("fedfit"))


def test_eta_and_durations():
    assert progress.eta(30.0, 3, 4) == " | eta 40s"
    assert progress.eta(0.0, 0, 4) == "" and progress.eta(10.0, 2, 0) == ""
    assert [progress.duration(s) for s in (45, 200, 7500)] == ["45s", "3m 20s", "2h 05m"]


def test_live_only_on_a_terminal_unless_asked(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv("FEDFIT_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert progress.is_live(Stream(True)) and not progress.is_live(Stream(False))
    monkeypatch.setenv("TERM", "dumb")
    assert not progress.is_live(Stream(True))
    monkeypatch.setenv("FEDFIT_PROGRESS", "live")
    assert progress.is_live(Stream(False))
    monkeypatch.setenv("FEDFIT_PROGRESS", "plain")
    assert not progress.is_live(Stream(True))
    bar = progress.bar("x", total=3)  # plain: a bar that draws nothing
    assert not bar.live
    bar.advance()
    bar.close()


def _run_in_terminal(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``args`` with a pseudo-terminal as stdout / stderr (as in a terminal); its exit code and output."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "FEDFIT_PROGRESS"}
    env.update(TERM="xterm", COLUMNS="160")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, cwd=cwd, env=env)
    os.close(follower)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        return p.wait(timeout=30), out.decode("utf-8", "replace")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(leader)


@pytest.mark.slow
def test_simulate_in_a_terminal_draws_live_rounds_and_clients(tmp_path):
    rc, out = _run_in_terminal([FEDFIT, "simulate", "dataset=digits", "image_size=32", "num_clients=2",
                                "clients_per_round=2", "new_users=0", "rounds=2", "queries=2", "local_steps=2",
                                "engine=inline", f"out_dir={tmp_path}", "name=tty"], tmp_path)
    assert rc == 0, out[-2000:]
    # round 0's and round 1's evaluations go out with the next round's training (overlap_eval); the last alone
    assert "tty: rounds" in out and "train+evaluate: clients" in out and "evaluate: clients" in out, out[-2000:]
    assert "\x1b[" in out and "eta" in out  # drawn and redrawn in place, with an ETA
    assert "round   2/2 |" in out and "fedfit: done in" in out  # the plain lines are there too
    assert re.search(r"paired [+-]\d+\.\d\d \+- \d+\.\d\d points over 2 clients, t = (-?\d+\.\d|nan)", out), out[-600:]
    assert (tmp_path / "tty" / "summary.json").is_file()
