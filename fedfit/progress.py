"""Progress of long work: live bars with an ETA on a terminal (rich), plain lines otherwise.

    bar = progress.bar("round", total=10)      # a row of the live display (a no-op when not live)
    bar.advance()                              # one step done: the ETA follows the steps' pace
    bar.close()                                # the row goes; the display ends with its last row

One display per process, shared by everything that reports (a sweep's runs, a run's rounds, the clients
within an exchange, fewshot tasks, bench phases), so nested work shows as nested rows. It is live when
stdout is a terminal (``FEDFIT_PROGRESS = live | plain`` decides instead); then ``print`` and logging
still reach the terminal above the rows. Plain mode draws nothing: the callers' own lines (one per
round, one per run, with an ETA from ``eta()``) are what a log file or CI shows.
"""
from __future__ import annotations

import os
import sys
from typing import Any


def is_live(stream: Any = None) -> bool:
    """Whether progress is drawn live: ``FEDFIT_PROGRESS`` if set (``live`` / ``plain``), else whether
    ``stream`` (stdout) is a terminal that can draw (not ``TERM=dumb``)."""
    mode = os.environ.get("FEDFIT_PROGRESS", "").strip().lower()
    if mode in ("live", "plain"):
        return mode == "live"
    if _DISPLAY.progress is not None:  # already drawing (stdout is then rich's proxy, not the terminal)
        return True
    stream = stream if stream is not None else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return bool(tty) and os.environ.get("TERM", "") != "dumb"


class Bar:
    """One row of the live display; every method is a no-op for a plain-mode bar."""

    def __init__(self, display: "_Display | None" = None, task: int | None = None):
        self._display, self._task = display, task

    @property
    def live(self) -> bool:
        return self._display is not None

    def advance(self, steps: float = 1) -> None:
        if self._display is not None:
            self._display.progress.advance(self._task, steps)

    def update(self, description: str | None = None, total: float | None = None,
               completed: float | None = None) -> None:
        if self._display is not None:
            self._display.progress.update(self._task, description=description, total=total, completed=completed)

    def close(self) -> None:
        if self._display is not None:
            self._display.close(self._task)
            self._display = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Display:
    """The process's rich ``Progress``: started with its first row, stopped (and cleared) with its last."""

    def __init__(self):
        self.progress = None
        self.rows = 0

    def open(self, description: str, total: float | None, completed: float = 0) -> Bar:
        if self.progress is None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                                     TimeRemainingColumn(), transient=True, redirect_stdout=True,
                                     redirect_stderr=True)
            self.progress.start()
        self.rows += 1
        return Bar(self, self.progress.add_task(description, total=total, completed=completed))

    def close(self, task: int) -> None:
        if self.progress is None:
            return
        self.progress.remove_task(task)
        self.rows -= 1
        if self.rows <= 0:
            self.progress.stop()
            self.progress, self.rows = None, 0


_DISPLAY = _Display()


def bar(description: str, total: float | None = None, completed: float = 0) -> Bar:
    """A new row (``total`` steps, ``completed`` of them already done), or a no-op bar when not live."""
    if not is_live():
        return Bar()
    return _DISPLAY.open(description, total, completed)


def eta(seconds_done: float, steps_done: int, steps_left: int) -> str:
    """``" | eta 3m 20s"`` from the mean pace of the steps done so far; "" when nothing is done or left."""
    if steps_done <= 0 or steps_left <= 0 or seconds_done <= 0:
        return ""
    return f" | eta {duration(seconds_done / steps_done * steps_left)}"


def duration(seconds: float) -> str:
    """``"45s"``, ``"3m 20s"``, ``"2h 05m"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"
