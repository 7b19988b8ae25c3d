"""The run's global state: one flat float32 vector, held as the Flower record the messages carry."""
from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from fedfit import wire


class GlobalState:
    """``arrays``: the record sent to clients; ``flat``: the float32 (n,) vector. Its state (checkpointed):
    the vector."""

    def __init__(self, flat: np.ndarray):
        self.set(flat)

    def set(self, flat: np.ndarray) -> None:
        self.arrays: ArrayRecord = wire.state_record(flat)

    @property
    def flat(self) -> np.ndarray:
        return wire.state_of(self.arrays)

    def state(self) -> dict[str, Any]:
        return {"state": np.asarray(self.flat, np.float32)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.set(state["state"])
