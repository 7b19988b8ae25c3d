"""``cifar100``: CIFAR-100 (32x32 RGB, 100 fine / 20 coarse classes) in torchvision's on-disk format.

Files: ``<root>/cifar-100-python/{train,test,meta}`` (the extracted ``cifar-100-python.tar.gz``), root
defaulting to ``<cache>/torchvision``. When they are missing, torchvision downloads them
(``CIFAR100(root, download=True)``); the pickles are then read directly (no checksum, so a local copy in
the same format works). Memory: 50,000 images at 96 px are 1.4 GB (memory-mapped from the cache);
``max_per_class`` keeps the first N images of each class.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .base import DataError, ImageSet
from .cache import cached
from .download import torchvision_download, torchvision_root
from .images import batch_to_square
from .loader import SOURCES
from .util import first_per_class, splits_of

FOLDER = "cifar-100-python"
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"cifar100: cannot read {path}: {e}") from None


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR100

    torchvision_download("cifar100", lambda r: CIFAR100(r, train=True, download=True), root,
                         f"download {URL} and extract it into {root}")


@SOURCES.register("cifar100")
def load_cifar100(image_size: int = 96, root=None, cache_dir=None, split: str = "train", labels: str = "fine",
                  max_per_class: int | None = None) -> ImageSet:
    """CIFAR-100 -> uint8 (N, S, S, 3); split "train" (50k) | "test" (10k) | "all"; labels "fine" | "coarse"."""
    splits = splits_of(split)
    if labels not in ("fine", "coarse"):
        raise DataError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    base = torchvision_root(root, cache_dir)
    options = {"root": str(base.resolve()), "split": split, "labels": labels, "max_per_class": max_per_class}

    def build() -> ImageSet:
        folder = base / FOLDER
        if not all((folder / f).exists() for f in (*splits, "meta")):
            _download(base)
        meta = _unpickle(folder / "meta")
        xs, ys = [], []
        for s in splits:
            d = _unpickle(folder / s)
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(d[f"{labels}_labels"], dtype=np.int64))
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = first_per_class(y, max_per_class)
        return ImageSet(name="cifar100", images=batch_to_square(x[keep], image_size), labels=y[keep],
                        class_names=list(meta[f"{labels}_label_names"]))

    return cached("cifar100", image_size, options, build, cache_dir)
