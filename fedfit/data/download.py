"""Fetching a torchvision data set's files when they are missing (the only place fedfit.data downloads)."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

from .base import DataError
from .cache import cache_root

NETWORK_TIMEOUT_S = 60


def torchvision_root(root, cache_dir) -> Path:
    """Where torchvision-format files live: ``root``, else ``<cache>/torchvision``."""
    return Path(root).expanduser() if root else cache_root(cache_dir) / "torchvision"


def torchvision_download(what: str, fetch: Callable[[str], object], root: Path, manual: str) -> None:
    """Run ``fetch(str(root))`` (a torchvision constructor with download=True); DataError when it fails.

    manual: what to download by hand and where to put it, for the error message.
    """
    root.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S)
    try:
        fetch(os.fspath(root))
    except Exception as e:  # URLError, socket errors, checksum errors, ...
        raise DataError(f"{what}: files not found under {root} and the download failed ({type(e).__name__}: {e}); "
                        f"offline? {manual} (or set data_root = <folder> where they are)") from None
    finally:
        socket.setdefaulttimeout(old)
