"""Find or fetch the files of a Debian data package without installing it.

Lookup order for ``debian_dir(package, subdir)``:
  1. ``$<env_var>`` if set (must point at the folder itself);
  2. ``/<subdir>`` (the package is installed system-wide);
  3. ``<cache>/debs/<package>/<subdir>`` (unpacked by an earlier call);
  4. ``apt-get download <package>`` in a temporary folder inside the cache, then
     ``dpkg-deb -x <file>.deb`` and an atomic rename to ``<cache>/debs/<package>``.
Any failure raises ``DataError`` saying what to install or which variable to set.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .base import DataError
from .cache import cache_root

DOWNLOAD_TIMEOUT_S = 1800
UNPACK_TIMEOUT_S = 600


def _usable(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _hint(package: str, subdir: str, env_var: str | None) -> str:
    hint = f"install it (`apt-get install {package}`, files land in /{subdir})"
    if env_var:
        hint += f", or unpack it yourself and set {env_var} to the unpacked '{Path(subdir).name}' folder"
    return hint


def _run(cmd: list[str], cwd: Path, timeout: int, package: str, hint: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DataError(f"{package}: `{' '.join(cmd)}` did not finish within {timeout} s; {hint}") from None
    except OSError as e:
        raise DataError(f"{package}: could not run `{' '.join(cmd)}` ({e}); {hint}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        extra = " (run `apt-get update` first?)" if "Unable to locate package" in (proc.stderr or "") else ""
        raise DataError(f"{package}: `{' '.join(cmd)}` failed{extra}: {' | '.join(tail)}; {hint}")


def debian_dir(package: str, subdir: str, *, cache_dir=None, env_var: str | None = None) -> Path:
    """Path of ``subdir`` (e.g. "usr/share/openclipart/png") of Debian ``package``, fetching it if needed."""
    hint = _hint(package, subdir, env_var)
    if env_var and os.environ.get(env_var):
        path = Path(os.environ[env_var]).expanduser()
        if not _usable(path):
            raise DataError(f"{env_var}={path} is not a folder with the files of {package}; "
                            f"point it at the unpacked '{Path(subdir).name}' folder or unset it")
        return path
    system = Path("/") / subdir
    if _usable(system):
        return system
    unpacked = cache_root(cache_dir) / "debs" / package
    if _usable(unpacked / subdir):
        return unpacked / subdir
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"{package}: not found and `{tool}` is not available to fetch it; {hint}")
    unpacked.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=unpacked.parent, prefix=f".fetch-{package}-") as tmp:
        tmp = Path(tmp)
        print(f"fedfit: fetching Debian package {package} (apt-get download) into {unpacked}", file=sys.stderr)
        _run(["apt-get", "download", package], tmp, DOWNLOAD_TIMEOUT_S, package, hint)
        debs = sorted(tmp.glob("*.deb"))
        if not debs:
            raise DataError(f"{package}: `apt-get download {package}` produced no .deb file; {hint}")
        _run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")], tmp, UNPACK_TIMEOUT_S, package, hint)
        if not _usable(tmp / "root" / subdir):
            raise DataError(f"{package}: the package has no files under /{subdir}; {hint}")
        if unpacked.exists() and not _usable(unpacked / subdir):
            shutil.rmtree(unpacked)  # a stale partial copy
        try:
            os.replace(tmp / "root", unpacked)
        except OSError:
            if not _usable(unpacked / subdir):  # not a concurrent fetch that won the race
                raise
    return unpacked / subdir
