"""On-disk cache of decoded data sets.

Location: the ``cache_dir`` argument, else ``$FEDFIT_CACHE``, else ``~/.cache/fedfit``. A data set is
stored under ``<cache>/datasets/`` as two uncompressed files named by source, resolution and a hash of
its options and ``FORMAT_VERSION``:

    <source>-<S>px-<hash>.images.npy   uint8 (N, S, S, 3), memory-mapped read-only on load
    <source>-<S>px-<hash>.meta.npz     labels, owners, class/owner names, skipped counts, N

Both are written to a temporary file and renamed into place (the meta file last), so a crash never
leaves a half-written entry; an entry that does not load or does not match is rebuilt. A lock file
(``<entry>.lock``) makes concurrent processes build an entry once.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from fedfit import atomic

from .base import ImageSet

FORMAT_VERSION = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$FEDFIT_CACHE``, else ``~/.cache/fedfit``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("FEDFIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedfit"


def entry_stem(source: str, image_size: int, options: dict[str, Any], cache_dir=None) -> Path:
    """Path prefix of the cache entry for one source, resolution and option set."""
    key = json.dumps({"v": FORMAT_VERSION, "source": source, "size": image_size, "options": options},
                     sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in source)
    return cache_root(cache_dir) / "datasets" / f"{safe}-{image_size}px-{digest}"


def _paths(stem: Path) -> tuple[Path, Path]:
    return stem.with_name(stem.name + ".images.npy"), stem.with_name(stem.name + ".meta.npz")


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    atomic.write(path, write, mode=0o644)  # readable by all: the cache may be shared


def save(stem: Path, data: ImageSet) -> None:
    """Write ``data`` as a cache entry (images first, meta last; each atomically)."""
    img_path, meta_path = _paths(stem)
    _atomic_write(img_path, lambda f: np.save(f, np.ascontiguousarray(data.images), allow_pickle=False))
    has_owners = data.owners is not None
    meta = dict(
        version=np.int64(FORMAT_VERSION),
        name=np.str_(data.name),
        count=np.int64(len(data.images)),
        labels=np.asarray(data.labels, dtype=np.int64),
        class_names=np.array(data.class_names, dtype=np.str_),
        owners=np.asarray(data.owners if has_owners else [], dtype=np.int64),
        owner_names=np.array(data.owner_names or [], dtype=np.str_),
        has_owners=np.bool_(has_owners),
        skipped=np.str_(json.dumps(data.skipped, sort_keys=True)),
    )
    _atomic_write(meta_path, lambda f: np.savez(f, **meta))


def load(stem: Path) -> ImageSet | None:
    """The cached ImageSet (images memory-mapped, read-only), or None when missing or unusable."""
    img_path, meta_path = _paths(stem)
    if not meta_path.exists() or not img_path.exists():
        return None
    try:
        with np.load(meta_path, allow_pickle=False) as z:
            if int(z["version"]) != FORMAT_VERSION:
                return None
            count = int(z["count"])
            labels = z["labels"]
            owners = z["owners"] if bool(z["has_owners"]) else None
            class_names = [str(s) for s in z["class_names"]]
            owner_names = [str(s) for s in z["owner_names"]] if owners is not None else None
            skipped = json.loads(str(z["skipped"]))
            name = str(z["name"])
        images = np.load(img_path, mmap_mode="r", allow_pickle=False)
        square = images.ndim == 4 and images.shape[1] == images.shape[2] and images.shape[3] == 3
        if not square or images.dtype != np.uint8 or images.shape[0] != count or len(labels) != count \
                or (owners is not None and len(owners) != count):
            raise ValueError("shapes do not match")
        if count and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError("labels out of range")
        images = images.view(np.ndarray)  # a plain read-only array backed by the mapping
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        print(f"fedfit: cache entry {stem.name} is unusable ({e}); rebuilding it", file=sys.stderr)
        return None
    return ImageSet(name=name, images=images, labels=labels, class_names=class_names, owners=owners,
                    owner_names=owner_names, skipped=skipped)


@contextmanager
def _build_lock(stem: Path) -> Iterator[None]:
    """Exclusive lock so concurrent processes build an entry once (the others wait, then load it)."""
    try:
        import fcntl

        stem.parent.mkdir(parents=True, exist_ok=True)
        f = open(stem.with_name(stem.name + ".lock"), "a")
    except (ImportError, OSError):  # no fcntl (Windows) or read-only cache: build without the lock
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def cached(source: str, image_size: int, options: dict[str, Any], build: Callable[[], ImageSet],
           cache_dir=None) -> ImageSet:
    """Load the cache entry for (source, image_size, options), or ``build()`` it and store it.

    ``options`` must hold everything that changes the result (JSON-serializable values). Entries load
    memory-mapped and read-only (pages shared between processes); never modify cache files in place.
    """
    stem = entry_stem(source, image_size, options, cache_dir)
    hit = load(stem)
    if hit is not None:
        return hit
    with _build_lock(stem):
        hit = load(stem)  # built by another process while this one waited
        if hit is not None:
            return hit
        data = build()
        try:
            save(stem, data)
        except OSError as e:
            print(f"fedfit: could not write the cache entry {stem} ({e}); continuing without it", file=sys.stderr)
            return data
    return load(stem) or data  # the memory-mapped copy, like every later load
