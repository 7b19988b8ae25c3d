"""The state layout: named float tensors <-> one flat float32 vector, and its fingerprint.

``Layout.of(named)`` records names, shapes and dtypes in order; ``pack`` concatenates the tensors
into one 1-D float32 vector (what travels on the wire as ONE array: Flower frames every array, so
one array keeps framing to a few hundred bytes) and ``unpack`` splits it back. ``fingerprint`` is a
short hash of the layout: two parties whose fingerprints agree agree on the meaning of every
position of the vector (a client with another model of the same size is told apart).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Layout:
    """Ordered names, shapes and dtypes of a set of named floating-point tensors.

    ``pack`` concatenates them (in this order, C order) into one float32 vector of ``size`` elements;
    ``unpack`` splits such a vector back. Two parties that agree on a Layout agree on the wire format.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.shapes) == len(self.dtypes)):
            raise ValueError("layout: names, shapes and dtypes differ in length")
        if len(set(self.names)) != len(self.names):
            raise ValueError("layout: duplicate tensor names")
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes):
            if not isinstance(name, str):
                raise ValueError(f"layout: tensor name {name!r} is not a string")
            if not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ValueError(f"layout: {name!r} has a bad shape {shape!r}")
            try:
                ok = np.issubdtype(np.dtype(dtype), np.floating)
            except TypeError:
                ok = False
            if not ok:
                raise ValueError(f"layout: {name!r} has dtype {dtype!r}; only floating dtypes can be packed")

    @classmethod
    def of(cls, named: Mapping[str, np.ndarray]) -> "Layout":
        """The layout of ``named``, in its iteration order."""
        arrays = {k: np.asarray(v) for k, v in named.items()}
        return cls(tuple(arrays), tuple(tuple(int(d) for d in a.shape) for a in arrays.values()),
                   tuple(a.dtype.str for a in arrays.values()))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Elements per tensor."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def size(self) -> int:
        """Total elements (the length of the packed vector)."""
        return sum(self.sizes)

    def check(self, named: Mapping[str, Any]) -> None:
        """Raise ValueError naming the first missing, extra, misshapen, mistyped or non-finite tensor."""
        if not isinstance(named, Mapping):
            raise ValueError(f"expected a dict of named arrays, got {type(named).__name__}")
        missing = [k for k in self.names if k not in named]
        if missing:
            raise ValueError(f"missing tensors: {', '.join(map(repr, missing))}")
        extra = [k for k in named if k not in set(self.names)]
        if extra:
            raise ValueError(f"unexpected tensors: {', '.join(map(repr, extra))}")
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes):
            a = named[name]
            if not isinstance(a, np.ndarray):
                raise ValueError(f"{name!r}: expected a numpy array, got {type(a).__name__}")
            if a.shape != shape:
                raise ValueError(f"{name!r}: shape {a.shape}, expected {shape}")
            if a.dtype != np.dtype(dtype):
                raise ValueError(f"{name!r}: dtype {a.dtype}, expected {np.dtype(dtype)}")
            bad = a.size - int(np.count_nonzero(np.isfinite(a)))
            if bad:
                raise ValueError(f"{name!r}: {bad} non-finite value(s)")

    def pack(self, named: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 (size,): the tensors of ``named`` (checked first) concatenated in layout order."""
        self.check(named)
        if not self.names:
            return np.zeros(0, np.float32)
        return np.concatenate([np.asarray(named[k], np.float32).ravel() for k in self.names])

    def unpack(self, flat: np.ndarray, copy: bool = False) -> dict[str, np.ndarray]:
        """Split a (size,) vector into tensors of the layout's shapes and dtypes.

        float32 tensors are views of ``flat`` unless ``copy``; other dtypes are converted copies.
        """
        flat = np.asarray(flat)
        if flat.ndim != 1 or flat.size != self.size:
            raise ValueError(f"expected a 1-D vector of {self.size} elements, got shape {flat.shape}")
        if not np.issubdtype(flat.dtype, np.floating):
            raise ValueError(f"expected a floating vector, got {flat.dtype}")
        flat = flat.astype(np.float32, copy=copy)
        out, start = {}, 0
        for name, shape, dtype, n in zip(self.names, self.shapes, self.dtypes, self.sizes):
            out[name] = flat[start:start + n].reshape(shape).astype(dtype, copy=False)
            start += n
        return out

    def to_json(self) -> str:
        return json.dumps([{"name": n, "shape": list(s), "dtype": d}
                           for n, s, d in zip(self.names, self.shapes, self.dtypes)])

    @classmethod
    def from_json(cls, text: str | list) -> "Layout":
        """Inverse of ``to_json`` (also accepts the already-parsed list); ValueError if malformed."""
        try:
            items = json.loads(text) if isinstance(text, (str, bytes)) else text
            return cls(tuple(i["name"] for i in items), tuple(tuple(i["shape"]) for i in items),
                       tuple(i["dtype"] for i in items))
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ValueError(f"malformed layout JSON: {e}") from e

    @property
    def fingerprint(self) -> int:
        """63-bit hash (an int, so it fits a Flower MetricRecord) of names, shapes and dtypes."""
        return int(hashlib.sha256(self.to_json().encode()).hexdigest()[:15], 16)
