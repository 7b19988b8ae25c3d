"""``digits``: scikit-learn's 1,797 handwritten digits (8x8, values 0..16), the fast test data set.

Values are scaled to 0..255 and the images enlarged (bicubic) to image_size, gray -> RGB. The data file
ships inside scikit-learn and is read directly (importing scikit-learn alone takes about a second).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .base import DataError, ImageSet
from .images import batch_to_square
from .loader import SOURCES


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """float (1797, 64) pixel values 0..16 and int (1797,) labels."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("the 'digits' source needs scikit-learn: pip install scikit-learn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if csv.exists():
        table = np.loadtxt(csv, delimiter=",")
        return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # layout changed: use the public API

    d = load_digits()
    return d.data, d.target.astype(np.int64)


@SOURCES.register("digits")
def load_digits(image_size: int = 32, root=None, cache_dir=None) -> ImageSet:
    """1,797 digits -> uint8 (1797, S, S, 3), labels 0..9, classes "0".."9"; no caching (loads in ~0.1 s)."""
    x, y = _digits_raw()
    gray = np.clip(np.rint(x * (255.0 / 16.0)), 0, 255).astype(np.uint8).reshape(-1, 8, 8)
    return ImageSet(name="digits", images=batch_to_square(gray, image_size), labels=y,
                    class_names=[str(i) for i in range(10)])
