"""Error feedback around a codec, and delta coding (``new - base``).

Error feedback keeps what a lossy codec (top-k) dropped and sends it later, so it is delayed, not lost.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedfit.codecs import Codec, Encoded, _check_vector

class ErrorFeedback:
    """Error feedback ("memory") for one sender around any codec (meant for top-k).

    Round t sends ``C(x_t + e_t)`` and keeps ``e_{t+1} = x_t + e_t - D(C(x_t + e_t))``, so the sum
    of decoded updates equals the sum of true updates minus the current residual: what top-k drops
    is delayed, not lost. Keep ONE instance per sender (client); the state is ``residual``
    (float32 (n,) or None), which a client that is rebuilt every round saves and passes back in.
    The receiver decodes with the plain codec.
    """

    def __init__(self, codec: Codec, residual: np.ndarray | None = None):
        self.codec = codec
        self.residual = None if residual is None else np.asarray(residual, np.float32).copy()

    def encode(self, x: np.ndarray) -> Encoded:
        x = _check_vector(x)
        if self.residual is not None and self.residual.shape != x.shape:
            raise ValueError(f"residual has shape {self.residual.shape}, update {x.shape}; call reset()")
        target = x if self.residual is None else x + self.residual
        enc = self.codec.encode(target)
        self.residual = target - self.codec.decode(enc, x.size)
        return enc

    def reset(self) -> None:
        self.residual = None


# ------------------------------------------------------------------------------------- deltas
def encode_delta(codec: Codec | ErrorFeedback, new: np.ndarray, base: np.ndarray) -> Encoded:
    """Encode ``new - base`` (both float32 (n,))."""
    if new.shape != base.shape:
        raise ValueError(f"new {new.shape} and base {base.shape} differ in shape")
    return codec.encode((new - base).astype(np.float32, copy=False))


def apply_delta(codec: Codec, enc: Mapping[str, np.ndarray], base: np.ndarray) -> np.ndarray:
    """``base + decode(enc)``: float32 (n,), n = base.size."""
    return (base + codec.decode(enc, base.size)).astype(np.float32, copy=False)
