"""Update codecs: a float32 vector of n elements <-> a few small arrays on the wire.

A ``Codec`` turns a float32 vector of n elements into a small dict of arrays (``encode``) and back
(``decode``); ``payload_bytes`` is the sum of their ``nbytes`` (bytes).

Specs for ``create_codec``::

    fp32                 lossless, {"x": float32 (n,)}                                  4n bytes
    fp16                 {"x": float16 (n,)}, values clipped to +-65504                 2n bytes
    int8                 {"q": int8 (n,), "scale": float32 (1,)}, one scale             n + 4 bytes
    int8-block[:B]       {"q": int8 (n,), "scale": float32 (ceil(n/B),)}, B=256        n + 4 ceil(n/B)
    topk:F[:fp16|fp32]   the k = max(1, round(F n)) largest |x|: {"gap": uint8|uint16 (m,),
                         "val": float16|float32 (m,)}, m >= k           ~3k bytes (fp16 values)

Top-k positions are gap-coded: position_j = position_{j-1} + gap_j (position_{-1} = -1), every
gap >= 1. A gap too long for the dtype is bridged by explicit zero entries, so m >= k; the encoder
picks the cheaper of uint8 and uint16 gaps (uint8 at 5 % density: 3 bytes per kept entry).

Decoding validates everything it receives (keys, dtypes, shapes, ranges, finiteness) and raises
ValueError: encoded updates come from untrusted clients. Delta coding (``new - global``) is the
caller's job (``fedfit.error_feedback.encode_delta`` / ``apply_delta``). Top-k should be wrapped in
``fedfit.error_feedback.ErrorFeedback``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedfit.registry import Registry

Encoded = dict[str, np.ndarray]

_F32_MAX = float(np.finfo(np.float32).max)
_F16_MAX = float(np.finfo(np.float16).max)  # 65504
_F16_U = 2.0**-11                            # unit roundoff of float16 (relative, normal range)
_F16_SUB = 2.0**-25                          # half the float16 subnormal spacing (absolute)
_F32_SLACK = 2.0**-21                        # float32 rounding in the scale and the product, relative


def _max_int8_scale() -> np.float32:
    """Largest float32 scale s with 127 * s finite in float32."""
    s = np.float32(_F32_MAX / 127)
    with np.errstate(over="ignore"):
        while not np.isfinite(np.float32(127) * s):
            s = np.nextafter(s, np.float32(0))
    return s


_MAX_SCALE = _max_int8_scale()


CODECS: Registry["Codec"] = Registry("codec")


def payload_bytes(enc: Mapping[str, np.ndarray]) -> int:
    """Sum of ``nbytes`` of the encoded arrays (bytes)."""
    return sum(int(a.nbytes) for a in enc.values())


class Codec:
    """Encodes a float32 vector of n elements into a few arrays; see the module docstring."""

    name: str = ""

    @classmethod
    def from_args(cls, *args: str) -> "Codec":
        """Build from the ``:``-separated arguments of a spec string."""
        if args:
            raise ValueError(f"codec {cls.name!r} takes no arguments, got {':'.join(args)!r}")
        return cls()

    @property
    def spec(self) -> str:
        """Canonical spec string: ``create_codec(c.spec)`` rebuilds ``c``."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def encode(self, x: np.ndarray) -> Encoded:
        """float32 (n,), finite -> a dict of 1-D arrays (ValueError otherwise)."""
        raise NotImplementedError

    def decode(self, enc: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """float32 (n,); ValueError on any malformed input."""
        raise NotImplementedError

    def error_bound(self, x: np.ndarray) -> float:
        """Guaranteed bound on max |decode(encode(x)) - x| (same units as x)."""
        raise NotImplementedError

    payload_bytes = staticmethod(payload_bytes)


def _check_vector(x: np.ndarray) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 1 or x.dtype != np.float32:
        raise ValueError(f"codecs encode 1-D float32 vectors, got {getattr(x, 'dtype', type(x).__name__)} "
                         f"{getattr(x, 'shape', '')}")
    if not np.isfinite(x).all():
        raise ValueError("cannot encode a vector with non-finite values")
    return x


def _fields(enc: Any, n: int, spec: dict[str, tuple[tuple[type, ...], int | None]]) -> dict[str, np.ndarray]:
    """Validate ``enc`` against {key: (allowed dtypes, length or None)}; return its 1-D arrays."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(enc, Mapping):
        raise ValueError(f"encoded update must be a dict of arrays, got {type(enc).__name__}")
    if set(enc) != set(spec):
        raise ValueError(f"encoded update has keys {sorted(enc)}, expected {sorted(spec)}")
    out = {}
    for key, (dtypes, length) in spec.items():
        a = enc[key]
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{key!r}: expected a numpy array, got {type(a).__name__}")
        if a.dtype not in [np.dtype(d) for d in dtypes]:
            raise ValueError(f"{key!r}: dtype {a.dtype}, expected {' or '.join(np.dtype(d).name for d in dtypes)}")
        if a.ndim != 1 or (length is not None and a.shape[0] != length):
            raise ValueError(f"{key!r}: shape {a.shape}, expected ({'m' if length is None else length},)")
        out[key] = a
    return out


def _check_finite(key: str, a: np.ndarray) -> None:
    if not np.isfinite(a).all():
        raise ValueError(f"{key!r}: non-finite values")


def _fp16_bound(amax: float) -> float:
    """Max |fp16(clip(v)) - v| over values with max |v| = amax."""
    if amax == 0:
        return 0.0
    return max(_F16_U * min(amax, _F16_MAX), _F16_SUB, amax - _F16_MAX)


def _to_fp16(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -_F16_MAX, _F16_MAX).astype(np.float16)


def _amax(x: np.ndarray) -> float:
    return float(np.abs(x).max()) if x.size else 0.0


@CODECS.register("fp32")
class FP32(Codec):
    """Lossless: {"x": float32 (n,)}, 4 bytes per element."""

    name = "fp32"

    def encode(self, x: np.ndarray) -> Encoded:
        return {"x": _check_vector(x).copy()}

    def decode(self, enc: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        a = _fields(enc, n, {"x": ((np.float32,), n)})["x"]
        _check_finite("x", a)
        return a.copy()

    def error_bound(self, x: np.ndarray) -> float:
        return 0.0


@CODECS.register("fp16")
class FP16(Codec):
    """{"x": float16 (n,)}, 2 bytes per element; relative error <= 2^-11, |values| clipped to 65504."""

    name = "fp16"

    def encode(self, x: np.ndarray) -> Encoded:
        return {"x": _to_fp16(_check_vector(x))}

    def decode(self, enc: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        a = _fields(enc, n, {"x": ((np.float16,), n)})["x"]
        _check_finite("x", a)
        return a.astype(np.float32)

    def error_bound(self, x: np.ndarray) -> float:
        return _fp16_bound(_amax(_check_vector(x)))


class _Int8(Codec):
    """Symmetric int8 with a float32 scale per block: scale = max |x| / 127 over the block.

    {"q": int8 (n,) in [-127, 127], "scale": float32 (blocks,)}. Error: half a quantization step
    (scale / 2) per block, plus float32 rounding (relative 2^-21 of the block's max |x|).
    """

    def _block(self, n: int) -> int:
        raise NotImplementedError

    def _nblocks(self, n: int) -> int:
        return -(-n // self._block(n))

    def _scales(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(max |x| per block as float64, float32 scales), both (blocks,)."""
        if x.size == 0:
            return np.zeros(self._nblocks(0)), np.zeros(self._nblocks(0), np.float32)
        amax = np.maximum.reduceat(np.abs(x).astype(np.float64), np.arange(0, x.size, self._block(x.size)))
        return amax, np.minimum((amax / 127).astype(np.float32), _MAX_SCALE)

    def encode(self, x: np.ndarray) -> Encoded:
        x = _check_vector(x)
        _, scale = self._scales(x)
        per = np.repeat(scale.astype(np.float64), self._block(x.size))[: x.size]
        q = np.divide(x, per, out=np.zeros(x.size), where=per > 0)
        return {"q": np.clip(np.rint(q), -127, 127).astype(np.int8), "scale": scale}

    def decode(self, enc: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        f = _fields(enc, n, {"q": ((np.int8,), n), "scale": ((np.float32,), None)})
        q, scale = f["q"], f["scale"]
        if scale.size != self._nblocks(n):
            raise ValueError(f"'scale': shape {scale.shape}, expected ({self._nblocks(n)},)")
        _check_finite("scale", scale)
        if (scale < 0).any() or (scale > _MAX_SCALE).any():
            raise ValueError(f"'scale': values must lie in [0, {float(_MAX_SCALE):g}]")
        if n and q.min() < -127:
            raise ValueError("'q': -128 is not a valid symmetric int8 code")
        return q.astype(np.float32) * np.repeat(scale, self._block(n))[:n]

    def error_bound(self, x: np.ndarray) -> float:
        amax, scale = self._scales(_check_vector(x))
        return float((scale / 2 + amax * _F32_SLACK).max()) if x.size else 0.0


@CODECS.register("int8")
class Int8(_Int8):
    """int8 with one scale for the whole vector: {"q": int8 (n,), "scale": float32 (1,)}, n + 4 bytes."""

    name = "int8"

    def _block(self, n: int) -> int:
        return max(n, 1)

    def _nblocks(self, n: int) -> int:
        return 1


@CODECS.register("int8-block")
class Int8Block(_Int8):
    """int8 with one scale per ``block`` elements: {"q": int8 (n,), "scale": float32 (ceil(n/block),)}."""

    name = "int8-block"

    def __init__(self, block: int = 256):
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
            raise ValueError(f"{self.name}: block must be a positive int, got {block!r}")
        self.block = int(block)

    @classmethod
    def from_args(cls, *args: str) -> "Codec":
        if len(args) > 1:
            raise ValueError(f"{cls.name}: expected {cls.name}[:BLOCK], got {':'.join((cls.name,) + args)!r}")
        try:
            return cls(*(int(a) for a in args))
        except ValueError as e:
            raise ValueError(f"{cls.name}: bad block size {args[0]!r}: {e}") from e

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.block}"

    def _block(self, n: int) -> int:
        return self.block


@CODECS.register("topk")
class TopK(Codec):
    """Keep the k = max(1, round(fraction n)) entries of largest |x|, zero the rest.

    {"gap": uint8 or uint16 (m,), "val": float16 or float32 (m,)}, m >= k (see the module docstring).
    Error: the largest dropped |x| (plus float16 rounding of the kept values). Biased: wrap the
    sender in ``ErrorFeedback`` so dropped mass is sent later instead of lost.
    """

    name = "topk"

    def __init__(self, fraction: float, values: str = "fp16"):
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ValueError(f"topk: fraction must be in (0, 1], got {fraction!r}")
        if values not in ("fp16", "fp32"):
            raise ValueError(f"topk: values must be fp16 or fp32, got {values!r}")
        self.fraction, self.values = float(fraction), values
        self._vdtype = np.float16 if values == "fp16" else np.float32

    @classmethod
    def from_args(cls, *args: str) -> "Codec":
        if not 1 <= len(args) <= 2:
            raise ValueError(f"topk: expected topk:FRACTION[:fp16|fp32], got {':'.join(('topk',) + args)!r}")
        try:
            fraction = float(args[0])
        except ValueError as e:
            raise ValueError(f"topk: bad fraction {args[0]!r}") from e
        return cls(fraction, *args[1:])

    @property
    def spec(self) -> str:
        return f"topk:{self.fraction:g}" + ("" if self.values == "fp16" else ":fp32")

    def k(self, n: int) -> int:
        """Entries kept of a vector of n elements."""
        return min(n, max(1, round(self.fraction * n))) if n else 0

    def _select(self, x: np.ndarray) -> np.ndarray:
        """Sorted positions of the k largest |x| (int64 (k,))."""
        k = self.k(x.size)
        if k == x.size:
            return np.arange(k)
        return np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k:])

    def encode(self, x: np.ndarray) -> Encoded:
        x = _check_vector(x)
        pos = self._select(x)
        vals = _to_fp16(x[pos]) if self.values == "fp16" else x[pos]
        gaps = np.diff(pos, prepend=-1)
        options = [(g.astype(dtype), v) for dtype in (np.uint8, np.uint16)
                   for g, v in [_bridge(gaps, vals, int(np.iinfo(dtype).max))]]
        g, v = min(options, key=lambda o: o[0].nbytes + o[1].nbytes)
        return {"gap": g, "val": v}

    def decode(self, enc: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        f = _fields(enc, n, {"gap": ((np.uint8, np.uint16), None), "val": ((self._vdtype,), None)})
        gap, val = f["gap"], f["val"]
        if gap.size != val.size:
            raise ValueError(f"'gap' has {gap.size} entries but 'val' has {val.size}")
        _check_finite("val", val)
        if gap.size and gap.min() == 0:
            raise ValueError("'gap': zero gap (repeated position)")
        pos = np.cumsum(gap, dtype=np.int64) - 1
        if pos.size and pos[-1] >= n:
            raise ValueError(f"'gap': position {int(pos[-1])} out of range for n={n}")
        if np.count_nonzero(val) > self.k(n):
            raise ValueError(f"'val': {np.count_nonzero(val)} non-zero entries, top-k allows {self.k(n)}")
        out = np.zeros(n, np.float32)
        out[pos] = val
        return out

    def error_bound(self, x: np.ndarray) -> float:
        x = _check_vector(x)
        keep = np.zeros(x.size, bool)
        keep[self._select(x)] = True
        dropped = _amax(x[~keep])
        return max(dropped, _fp16_bound(_amax(x[keep])) if self.values == "fp16" else 0.0)


def _bridge(gaps: np.ndarray, vals: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Split gaps longer than ``limit`` into runs of ``limit`` carrying zero values."""
    if gaps.size == 0 or gaps.max() <= limit:
        return gaps, vals
    parts = -(-gaps // limit)                   # entries per original gap
    last = np.cumsum(parts) - 1                 # where each real entry lands
    g = np.full(int(parts.sum()), limit, np.int64)
    g[last] = gaps - (parts - 1) * limit
    v = np.zeros(g.size, vals.dtype)
    v[last] = vals
    return g, v


def create_codec(spec: str) -> Codec:
    """Parse ``name[:arg[:arg]]`` (e.g. "fp16", "int8-block:128", "topk:0.05").

    Unknown names raise the registry's KeyError (listing the choices); bad arguments ValueError.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"codec spec must be a non-empty string, got {spec!r}")
    name, *args = spec.strip().split(":")
    return CODECS.get(name).from_args(*args)
