"""``emnist``: EMNIST handwritten characters (28x28 gray) in torchvision's on-disk format.

Files: ``<root>/EMNIST/raw/emnist-<subset>-<train|test>-<images-idx3|labels-idx1>-ubyte`` (``.gz`` also
accepted), root defaulting to ``<cache>/torchvision``. When they are missing, torchvision downloads the
535 MB archive (``EMNIST(root, split=subset, download=True)``). Images are stored transposed in the files
and are turned upright here. subset: byclass (62 classes), bymerge / balanced (47), letters (26),
digits / mnist (10). Memory: ``max_per_class`` keeps the first N images of each class.
"""
from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from .base import DataError, ImageSet
from .cache import cached
from .download import torchvision_download, torchvision_root
from .idx import read_idx
from .images import batch_to_square
from .loader import SOURCES
from .util import first_per_class, splits_of

URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
_MERGED = set("cijklmopsuvwxyz")
_ALL = sorted(set(string.digits + string.ascii_letters))
CLASSES = {
    "byclass": _ALL,
    "bymerge": [c for c in _ALL if c not in _MERGED],
    "balanced": [c for c in _ALL if c not in _MERGED],
    "letters": list(string.ascii_lowercase),  # file labels are 1..26
    "digits": list(string.digits),
    "mnist": list(string.digits),
}


def _raw_file(raw: Path, subset: str, split: str, kind: str) -> Path | None:
    name = f"emnist-{subset}-{split}-{kind}-ubyte"
    return next((p for p in (raw / name, raw / f"{name}.gz") if p.exists()), None)


def _download(root: Path, subset: str) -> None:
    from torchvision.datasets import EMNIST

    torchvision_download("emnist", lambda r: EMNIST(r, split=subset, train=True, download=True), root,
                         f"download {URL} and extract the emnist-*-ubyte.gz files into {root / 'EMNIST' / 'raw'}")


@SOURCES.register("emnist")
def load_emnist(image_size: int = 96, root=None, cache_dir=None, subset: str = "balanced", split: str = "train",
                max_per_class: int | None = None) -> ImageSet:
    """EMNIST -> uint8 (N, S, S, 3), white strokes on black; split "train" | "test" | "all"."""
    if subset not in CLASSES:
        raise DataError(f"subset must be one of {', '.join(CLASSES)}, got {subset!r}")
    splits = splits_of(split)
    base = torchvision_root(root, cache_dir)
    options = {"root": str(base.resolve()), "subset": subset, "split": split, "max_per_class": max_per_class}

    def build() -> ImageSet:
        raw = base / "EMNIST" / "raw"
        wanted = [(s, k) for s in splits for k in ("images-idx3", "labels-idx1")]
        if any(_raw_file(raw, subset, s, k) is None for s, k in wanted):
            _download(base, subset)
            missing = [f"emnist-{subset}-{s}-{k}-ubyte" for s, k in wanted if _raw_file(raw, subset, s, k) is None]
            if missing:
                raise DataError(f"emnist: {', '.join(missing)} still missing under {raw} after the download")
        xs, ys = [], []
        for s in splits:
            xs.append(read_idx(_raw_file(raw, subset, s, "images-idx3")).transpose(0, 2, 1))
            ys.append(read_idx(_raw_file(raw, subset, s, "labels-idx1")).astype(np.int64))
        x, y = np.concatenate(xs), np.concatenate(ys)
        if subset == "letters":
            y = y - 1
        if len(y) and (y.min() < 0 or y.max() >= len(CLASSES[subset])):
            raise DataError(f"emnist: labels of {raw} do not fit subset {subset!r}")
        keep = first_per_class(y, max_per_class)
        return ImageSet(name=f"emnist-{subset}", images=batch_to_square(x[keep], image_size), labels=y[keep],
                        class_names=list(CLASSES[subset]))

    return cached("emnist", image_size, options, build, cache_dir)
