"""Small helpers shared by the array sources."""
from __future__ import annotations

import numpy as np

from .base import DataError


def splits_of(split: str) -> list[str]:
    """"train" | "test" | "all" -> the file splits to read."""
    if split not in ("train", "test", "all"):
        raise DataError(f"split must be 'train', 'test' or 'all', got {split!r}")
    return ["train", "test"] if split == "all" else [split]


def first_per_class(labels: np.ndarray, max_per_class: int | None) -> np.ndarray:
    """Indices (in order) keeping at most ``max_per_class`` of each label; all when None."""
    if max_per_class is None:
        return np.arange(len(labels))
    if max_per_class < 1:
        raise DataError(f"max_per_class must be >= 1, got {max_per_class}")
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], labels[order], side="left")
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - starts
    return np.flatnonzero(rank < max_per_class)
