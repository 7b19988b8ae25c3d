"""``fashion-mnist``: Zalando's 70,000 28x28 gray clothing images in 10 classes.

Files come from the Debian package ``dataset-fashion-mnist`` (IDX .gz files under
/usr/share/datasets/fashion-mnist), fetched by ``debian_dir`` or found via ``$FEDFIT_FASHION_MNIST_DIR``
or ``root``. Images are resized to image_size and expanded to RGB. Memory: 60,000 images at 96 px are
1.7 GB (memory-mapped from the cache); ``max_per_class`` keeps the first N images of each class.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError, ImageSet
from .cache import cached
from .debian import debian_dir
from .idx import read_idx
from .images import batch_to_square
from .loader import SOURCES
from .util import first_per_class, splits_of

PACKAGE, SUBDIR, ENV = "dataset-fashion-mnist", "usr/share/datasets/fashion-mnist", "FEDFIT_FASHION_MNIST_DIR"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
_FILES = {"train": "train", "test": "t10k"}


def _read(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for s in splits_of(split):
        prefix = _FILES[s]
        found = {}
        for kind, stem in (("images", "images-idx3-ubyte"), ("labels", "labels-idx1-ubyte")):
            cands = [folder / f"{prefix}-{stem}{ext}" for ext in (".gz", "")]
            path = next((p for p in cands if p.exists()), None)
            if path is None:
                raise DataError(f"fashion-mnist: {cands[0]} not found")
            found[kind] = read_idx(path)
        xs.append(found["images"])
        ys.append(found["labels"].astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


@SOURCES.register("fashion-mnist")
def load_fashion_mnist(image_size: int = 96, root=None, cache_dir=None, split: str = "train",
                       max_per_class: int | None = None) -> ImageSet:
    """Fashion-MNIST -> uint8 (N, S, S, 3); split "train" (60k), "test" (10k) or "all" (70k)."""
    splits_of(split)
    options = {"split": split, "max_per_class": max_per_class, "root": str(root) if root else None}

    def build() -> ImageSet:
        folder = Path(root) if root else debian_dir(PACKAGE, SUBDIR, cache_dir=cache_dir, env_var=ENV)
        x, y = _read(folder, split)
        keep = first_per_class(y, max_per_class)
        return ImageSet(name="fashion-mnist", images=batch_to_square(x[keep], image_size), labels=y[keep],
                        class_names=list(CLASS_NAMES))

    return cached("fashion-mnist", image_size, options, build, cache_dir)
