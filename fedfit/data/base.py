"""Containers shared by every data source and partitioner.

Images are kept as uint8 arrays of shape (N, S, S, 3) at the working resolution S (pixels), RGB,
so a data set of a few thousand images costs a few tens of MB and is converted to float only per batch
(see ``fedfit.backbones.Backbone.preprocess``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(RuntimeError):
    """A data source could not be loaded; the message says why and what to do."""


@dataclass
class ImageSet:
    """A labelled image collection at one working resolution.

    images: uint8 (N, S, S, 3); labels: int64 (N,) indices into ``class_names``;
    owners: optional int64 (N,) indices into ``owner_names`` (natural partitions, e.g. one folder
    per user); skipped: counts of files that were not loaded, by reason (e.g. ``{"too-large": 1}``).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    owners: np.ndarray | None = None
    owner_names: list[str] | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise DataError(f"{self.name}: images must be uint8 (N, S, S, 3), got {self.images.dtype} {self.images.shape}")
        if len(self.labels) != len(self.images):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        self.labels = np.asarray(self.labels, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def counts(self) -> np.ndarray:
        """Images per class, int64 (num_classes,)."""
        return np.bincount(self.labels, minlength=self.num_classes)


@dataclass
class ClientData:
    """One client's few-shot data: a labelled support set and a query set over the same classes.

    support_x / query_x: uint8 (n, S, S, 3); support_y / query_y: int64 local labels 0..C-1;
    classes: int64 (C,) the global class index of each local label (into the ImageSet's class_names);
    history_x: uint8 (h, S, S, 3) the client's unlabelled history images of its own classes (labels
    withheld; (0, S, S, 3) when there is none); query_ids: int64 (m,) the query images' indices in the
    set they came from (a test split may give two clients the same image: the ids tell).
    """

    client_id: int
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: np.ndarray
    history_x: np.ndarray | None = None
    query_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.history_x is None:
            self.history_x = np.zeros((0, *self.support_x.shape[1:]), dtype=np.uint8)
        if self.query_ids is None:
            self.query_ids = np.full(len(self.query_y), -1, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_examples(self) -> int:
        """Labelled examples a client trains on (the support set), the FedAvg weight."""
        return len(self.support_y)
