"""``imagefolder``: a user's own images, one folder per class, optionally one folder per client above it.

Layouts (``layout=``):
  * "classes": ``root/<class>/**/<image>`` -- no owners;
  * "clients": ``root/<client>/<class>/**/<image>`` -- ``owners``/``owner_names`` name the client of each
    image (for ``partition_natural``); class names are pooled over clients;
  * "auto" (default): "clients" when no top folder holds image files directly and at least one holds
    sub-folders with images, else "classes".
Files without an image extension and hidden files/folders are ignored; files lying above the class level
are skipped ("outside-class"); bad images are skipped and counted ("unreadable", "too-large").
The cache key includes a fingerprint (paths, sizes, modification times) of the files, so edits rebuild it.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np

from .base import DataError, ImageSet
from .cache import cached
from .images import DECODE_VERSION, MAX_PIXELS, OK, decode_files, is_image_file
from .loader import SOURCES
from .openclipart import default_workers


def _images_under(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursive, sorted, hidden entries skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".") and is_image_file(f)]
    return found


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _direct_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p.name))


def detect_layout(root: Path) -> str:
    """"clients" or "classes" for ``layout="auto"`` (rule in the module docstring)."""
    tops = _subdirs(root)
    if any(_direct_images(t) for t in tops):
        return "classes"
    if any(_images_under(s) for t in tops for s in _subdirs(t)):
        return "clients"
    return "classes"


def scan(root: Path, layout: str) -> tuple[list[tuple[str | None, str, Path]], Counter]:
    """(client or None, class, path) for every image, and skip counts."""
    items: list[tuple[str | None, str, Path]] = []
    skipped: Counter = Counter()
    skipped["outside-class"] += len(_direct_images(root))
    for top in _subdirs(root):
        if layout == "classes":
            items += [(None, top.name, p) for p in _images_under(top)]
            continue
        skipped["outside-class"] += len(_direct_images(top))
        for cls in _subdirs(top):
            items += [(top.name, cls.name, p) for p in _images_under(cls)]
    return items, skipped


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@SOURCES.register("imagefolder")
def load_imagefolder(image_size: int = 96, root=None, cache_dir=None, layout: str = "auto",
                     min_per_class: int = 1, workers: int | None = None, max_pixels: int = MAX_PIXELS) -> ImageSet:
    """Images under ``root`` -> uint8 (N, S, S, 3); classes = folder names (sorted); see module docstring."""
    if root is None:
        raise DataError("imagefolder needs root=<folder> (root/<class>/<images> or root/<client>/<class>/<images>)")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} does not exist or is not a folder")
    if layout not in ("auto", "classes", "clients"):
        raise DataError(f"layout must be 'auto', 'classes' or 'clients', got {layout!r}")
    resolved = detect_layout(root) if layout == "auto" else layout
    items, skipped = scan(root, resolved)
    if not items:
        raise DataError(f"imagefolder: no image files found under {root} with layout {resolved!r}")
    options = {"decode": DECODE_VERSION, "root": str(root), "layout": resolved, "min_per_class": min_per_class,
               "max_pixels": max_pixels, "files": _fingerprint([p for _, _, p in items])}

    def build() -> ImageSet:
        images, reasons = decode_files([p for _, _, p in items], image_size, workers=workers or default_workers(),
                                       max_pixels=max_pixels, label=f"imagefolder {root.name}")
        ok = np.array([r == OK for r in reasons])
        skipped.update(r for r in reasons if r != OK)
        cls_of = np.array([c for _, c, _ in items])
        counts = Counter(cls_of[ok].tolist())
        class_names = sorted(c for c, n in counts.items() if n >= min_per_class)
        keep = ok & np.isin(cls_of, class_names)
        skipped["small-class"] += int((ok & ~keep).sum())
        if not class_names:
            raise DataError(f"imagefolder: no class under {root} has {min_per_class} readable images")
        labels = np.searchsorted(class_names, cls_of[keep])
        owners = owner_names = None
        if resolved == "clients":
            client_of = np.array([o for o, _, _ in items])[keep]
            owner_names = sorted(set(client_of.tolist()))
            owners = np.searchsorted(owner_names, client_of).astype(np.int64)
        return ImageSet(name=f"imagefolder:{root.name}", images=images[keep], labels=labels, class_names=class_names,
                        owners=owners, owner_names=owner_names, skipped={k: v for k, v in sorted(skipped.items()) if v})

    return cached("imagefolder", image_size, options, build, cache_dir)
