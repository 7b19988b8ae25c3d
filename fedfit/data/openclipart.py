"""``openclipart``: public-domain clip art from the Debian package ``openclipart-png`` (the default data set).

Files: ``root`` if given, else ``$FEDFIT_OPENCLIPART_DIR``, /usr/share/openclipart/png (installed), or the
package fetched into ``<cache>/debs`` by ``debian_dir`` (131 MB download, once).

Category rule (applied to the folder tree, before decoding):
  * the class of an image is the folder that directly holds it, named by its path, e.g. ``animals/birds``;
    images lying directly in a top folder form that folder's class (``geography``, ``tools``, ...);
  * symbolic links are skipped (reason "link"): they are cross-listings of a picture that already lives
    in another folder, and keeping them would put one picture in two classes;
  * folders of icons, flags, stars, gradients, patterns, and the non-categories ``special/examples``,
    ``unsorted`` (and its ``duplicates``) are dropped with everything below them (reason "excluded");
  * a class needs ``min_per_class`` usable images (default 20), counted before and again after decoding
    (reason "small-class").
Decoding (``images.decode_image``) skips files above ``max_pixels`` ("too-large", e.g. a 623-megapixel
stop sign), broken files ("unreadable") and fully transparent ones ("blank"); transparent margins are
cropped so the drawing fills the square.

With openclipart-png 1:0.18+dfsg-19 and the defaults this gives 52 classes and 2,818 images (skipped:
3,653 excluded, 1,221 links, 414 in small classes, 12 too large, 3 blank). Counting the links and the
patterns/unsorted folders as well would give about 59 classes, with the same pictures in several classes.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from .base import DataError, ImageSet
from .cache import cached
from .debian import debian_dir
from .images import DECODE_VERSION, MAX_PIXELS, OK, decode_files
from .loader import SOURCES

PACKAGE, SUBDIR, ENV = "openclipart-png", "usr/share/openclipart/png", "FEDFIT_OPENCLIPART_DIR"
EXCLUDED_NAMES = frozenset({"icons", "flags", "stars", "gradients", "patterns", "examples", "unsorted",
                            "duplicates"})
RULE_VERSION = 1  # bump when the category rule changes (part of the cache key)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def scan(folder: Path) -> tuple[dict[str, list[Path]], Counter]:
    """Candidate files by class name (rule above, before ``min_per_class``) and skip counts."""
    classes: dict[str, list[Path]] = {}
    skipped: Counter = Counter()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        rel = Path(dirpath).relative_to(folder)
        excluded = any(part.lower() in EXCLUDED_NAMES for part in rel.parts)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.lower().endswith(".png"):
                continue
            if path.is_symlink():
                skipped["link"] += 1
            elif excluded or not rel.parts:
                skipped["excluded"] += 1
            else:
                classes.setdefault(rel.as_posix(), []).append(path)
    return classes, skipped


@SOURCES.register("openclipart")
def load_openclipart(image_size: int = 96, root=None, cache_dir=None, min_per_class: int = 20,
                     workers: int | None = None, max_pixels: int = MAX_PIXELS) -> ImageSet:
    """OpenClipart -> uint8 (N, S, S, 3) on white; about 50 classes of >= 20 images (see module docstring)."""
    if min_per_class < 1:
        raise DataError(f"min_per_class must be >= 1, got {min_per_class}")
    source = root or os.environ.get(ENV) or None
    options = {"rule": RULE_VERSION, "decode": DECODE_VERSION, "min_per_class": min_per_class,
               "max_pixels": max_pixels, "dir": str(source) if source else None}

    def build() -> ImageSet:
        folder = Path(root) if root else debian_dir(PACKAGE, SUBDIR, cache_dir=cache_dir, env_var=ENV)
        if not folder.is_dir():
            raise DataError(f"openclipart: {folder} is not a folder")
        return _build(folder, image_size, min_per_class, workers or default_workers(), max_pixels)

    return cached("openclipart", image_size, options, build, cache_dir)


def _build(folder: Path, size: int, min_per_class: int, workers: int, max_pixels: int) -> ImageSet:
    classes, skipped = scan(folder)
    for name in [c for c, files in classes.items() if len(files) < min_per_class]:
        skipped["small-class"] += len(classes.pop(name))
    names = sorted(classes)
    paths = [p for c in names for p in classes[c]]
    labels = np.repeat(np.arange(len(names)), [len(classes[c]) for c in names])
    images, reasons = decode_files(paths, size, workers=workers, max_pixels=max_pixels, label="openclipart")
    ok = np.array([r == OK for r in reasons], dtype=bool)
    skipped.update(r for r in reasons if r != OK)
    counts = np.bincount(labels[ok], minlength=len(names))
    keep_class = counts >= min_per_class
    skipped["small-class"] += int(counts[~keep_class].sum())
    keep = ok & keep_class[labels]
    remap = np.cumsum(keep_class) - 1
    if not keep_class.any():
        raise DataError(f"openclipart: no category under {folder} has {min_per_class} usable images")
    return ImageSet(name="openclipart", images=images[keep], labels=remap[labels[keep]],
                    class_names=[n for n, k in zip(names, keep_class) if k], skipped=dict(sorted(skipped.items())))
