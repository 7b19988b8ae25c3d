"""Files that survive a SIGKILL at any moment: written whole or not at all.

``write_bytes`` writes to a temporary file in the same folder, flushes and fsyncs it, renames it over
the target (atomic on POSIX) and fsyncs the folder, so a reader sees the old file or the new one,
never a torn one. ``append_line`` appends one line and fsyncs (a kill mid-line leaves at most a
partial last line, which readers of append-only logs drop).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every filesystem lets a folder be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write(path: str | Path, writer: Callable[[BinaryIO], None], mode: int | None = None) -> None:
    """Replace ``path`` atomically with what ``writer(file)`` writes (see module docstring);
    ``mode``: its permission bits (a temporary file is private to its owner)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` + newline to ``path`` and fsync it."""
    with open(path, "a") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())
