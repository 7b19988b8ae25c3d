"""Reader for the IDX format of (Fashion-)MNIST and EMNIST (optionally gzip-compressed)."""
from __future__ import annotations

import gzip
import os

import numpy as np

from .base import DataError

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` decompressed on the fly), in native byte order."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4)) if len(raw) >= header else ()
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < header or len(raw) != expected:
        raise DataError(f"{path} is truncated or corrupt: {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` (uint8 or another IDX type) as an IDX file; gzip when the name ends in ``.gz``."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
    a = np.asarray(array)
    code = codes[a.dtype.newbyteorder("=")]
    data = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, ">u4").tobytes() + a.astype(_DTYPES[code]).tobytes()
    path = os.fspath(path)
    with (gzip.open if path.endswith(".gz") else open)(path, "wb") as f:
        f.write(data)
