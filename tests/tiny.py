"""The tiny federation the federated tests start from: scikit-learn's digits (bundled, no download) at
32 px, 4 clients, 2 trained per round, 5 query images per class. A test adds or overrides what it
needs (``{**TINY, "rounds": 3}``, ``[*TINY_ARGS, "rounds=3"]``: later values win)."""
from __future__ import annotations

from typing import Any

TINY: dict[str, Any] = {"dataset": "digits", "image_size": 32, "num_clients": 4, "clients_per_round": 2,
                        "queries": 5}
TINY_ARGS: list[str] = [f"{k}={v}" for k, v in TINY.items()]  # the same, as key=value arguments


def tiny_config(**over: Any):
    """The tiny federation's resolved options with ``over`` applied (``fedfit.config.load_config``)."""
    from fedfit.config import load_config

    return load_config(overrides={**TINY, **over})
