"""Paired changes between two evaluated rounds: is the last round really below round 0, or is it noise?

Two rounds of one run score the same query images, so their difference is measured pairwise:
- personalized accuracy per client (``per_client[p]["accuracy"]``, the same queries every round): the
  mean over clients of (last - first) and its standard error over clients;
- the global head per image (``RoundRecord.global_answers``: which image ids it scored, which it got
  right): the mean over images of (right last - right first) and its standard error over images.

A change within ``NOISE_SE`` standard errors of zero is what query sampling alone gives. Changes are in
points (percent), standard errors too.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

NOISE_SE = 2.0  # a drop smaller than this many standard errors is not told apart from query noise


@dataclass(frozen=True)
class Change:
    """last - first in points: ``mean`` +- ``se`` (standard error) over ``n`` paired units."""

    mean: float
    se: float
    n: int

    @property
    def t(self) -> float:
        return self.mean / self.se if self.se > 0 else float("nan")

    @property
    def within_noise(self) -> bool:
        """Not below zero by more than ``NOISE_SE`` standard errors (a drop not told apart from noise)."""
        return self.mean >= -NOISE_SE * self.se - 1e-9

    def __str__(self) -> str:
        return f"{self.mean:+.2f} +- {self.se:.2f}"


def change(diffs: np.ndarray) -> Change | None:
    """The paired change of per-unit differences ``diffs`` (points); None without any unit."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return None
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return Change(float(d.mean()), se, int(d.size))


def client_diffs(first: dict[str, dict[str, Any]], last: dict[str, dict[str, Any]], num_clients: int) -> np.ndarray:
    """Personalized accuracy, last - first in points, per training client (partition id < ``num_clients``)
    evaluated in both rounds; ``first`` / ``last`` are ``RoundRecord.per_client``."""
    parts = [p for p in first if p in last and int(p) < num_clients
             and "accuracy" in first[p] and "accuracy" in last[p]]
    return np.array([100 * (last[p]["accuracy"] - first[p]["accuracy"]) for p in parts], dtype=float)


def client_change(first: dict[str, dict[str, Any]], last: dict[str, dict[str, Any]],
                  num_clients: int) -> Change | None:
    """``change`` of ``client_diffs``."""
    return change(client_diffs(first, last, num_clients))


def encode_answers(ids: np.ndarray, right: np.ndarray) -> dict[str, Any]:
    """``RoundRecord.global_answers``: the scored image ids (int64 (m,), in scoring order) and whether each
    was right (bool (m,)), as base64 of little-endian int32 ids (int64 where an id needs it) and of packed
    bits (4.125 bytes per image, ~5.5 in JSON)."""
    ids = np.asarray(ids, dtype=np.int64)
    small = ids.size == 0 or (ids.min() >= -2**31 and ids.max() < 2**31)
    ids = ids.astype("<i4" if small else "<i8")
    return {"n": int(ids.size), "ids": base64.b64encode(ids.tobytes()).decode("ascii"), "id_bytes": ids.itemsize,
            "right": base64.b64encode(np.packbits(np.asarray(right, dtype=bool)).tobytes()).decode("ascii")}


def decode_answers(answers: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 (m,), right bool (m,)) from ``encode_answers``' record."""
    n = int(answers["n"])
    width = int(answers.get("id_bytes", 4))
    ids = np.frombuffer(base64.b64decode(answers["ids"]), dtype=f"<i{width}").astype(np.int64)
    right = np.unpackbits(np.frombuffer(base64.b64decode(answers["right"]), dtype=np.uint8))[:n].astype(bool)
    if ids.size != n or right.size != n:
        raise ValueError(f"global answers of {n} images hold {ids.size} ids and {right.size} answers")
    return ids, right


def image_diffs(first: dict[str, Any] | None, last: dict[str, Any] | None) -> np.ndarray | None:
    """The global head, last - first in points (-100, 0 or +100), per image; None unless both rounds
    recorded their answers on the same images in the same order (every training client evaluated in
    both, as in the stability runs)."""
    if not first or not last:
        return None
    (ids0, right0), (ids1, right1) = decode_answers(first), decode_answers(last)
    if not np.array_equal(ids0, ids1):
        return None
    return 100 * (right1.astype(float) - right0.astype(float))


def image_change(first: dict[str, Any] | None, last: dict[str, Any] | None) -> Change | None:
    """``change`` of ``image_diffs``; None where they cannot be paired."""
    d = image_diffs(first, last)
    return None if d is None else change(d)
