"""Every random choice of a run from one seeded tree (``numpy.random.SeedSequence``), nothing global.

A stream is named by the run's seed and a path of integers and short strings, e.g.
``generator(seed, "sample-train", round)`` or ``derive(seed, "train", round, partition_id)``: the same
path gives the same numbers in every process and on every machine (Python's ``hash()`` of strings
changes per process, Flower's node ids and its ``random.sample`` per start; neither is used).

The one exception is differential privacy with ``dp_randomness = secret`` (``secret(cfg)``): the draws
that would tell who trained in a round - the training sample, the DP noise, a training client's
simulated dropout and delay - come from the operating system's entropy (``os_generator``), since
amplification by sampling needs a sample no reader of the seed can recompute.
"""
from __future__ import annotations

import zlib

import numpy as np


def _key(part: int | str) -> int:
    if isinstance(part, (bool, np.bool_)):
        raise TypeError("seed path parts are ints or strings, not bools")
    if isinstance(part, (int, np.integer)):
        if part < 0:
            raise ValueError(f"seed path parts must be >= 0, got {part}")
        return int(part)
    if isinstance(part, str):
        return zlib.crc32(part.encode()) | (1 << 32)  # strings never collide with small ints
    raise TypeError(f"seed path parts are ints or strings, got {type(part).__name__}")


def sequence(seed: int, *path: int | str) -> np.random.SeedSequence:
    """The ``SeedSequence`` of ``path`` under ``seed``."""
    return np.random.SeedSequence([_key(seed), *(_key(p) for p in path)])


def generator(seed: int, *path: int | str) -> np.random.Generator:
    """A fresh numpy Generator for ``path`` under ``seed``."""
    return np.random.default_rng(sequence(seed, *path))


def derive(seed: int, *path: int | str) -> int:
    """A 32-bit integer seed for ``path`` under ``seed`` (for APIs that take an int: torch, episodes)."""
    return int(sequence(seed, *path).generate_state(1, np.uint32)[0])


def secret(cfg: dict) -> bool:
    """Whether the run draws its training sample, DP noise and training faults from the OS's entropy
    (``dp`` on with ``dp_randomness = secret``)."""
    return cfg.get("dp", "none") != "none" and cfg.get("dp_randomness", "secret") == "secret"


def os_generator() -> np.random.Generator:
    """A numpy Generator seeded from the operating system's entropy (128 bits), never from the run's seed."""
    return np.random.default_rng(np.random.SeedSequence())
