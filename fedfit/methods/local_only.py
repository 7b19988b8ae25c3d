"""``local-only``: FiT's lower bound. Every training client fine-tunes the adapter alone, once (round 1,
``local_steps``: FiT's 400 by default), from the initial state, and keeps it (``clients.state``); it is
evaluated with its own state. Nothing is aggregated and nothing is sent: its messages carry no state,
they are the simulator's control messages and not traffic; no global head (there is no global state)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fedfit.config import FIT_LOCAL_STEPS
from fedfit.methods.base import METHODS, Method, Reply, Stock


@METHODS.register("local-only")
class LocalOnly(Method):
    name = "local-only"
    shared = False
    overlap = False
    aggregates = False
    local_steps = FIT_LOCAL_STEPS

    def training_rounds(self) -> int:
        return min(int(self.cfg["rounds"]), 1)

    def cohort(self) -> int:
        return int(self.cfg["num_clients"])  # everyone, once

    def aggregate(self, server_round: int, state: np.ndarray, replies: Sequence[Reply],
                  stock: Stock) -> np.ndarray | None:
        return None

    def describe(self, size: int) -> str:
        from fedfit.config import local_steps
        from fedfit.format import human_bytes

        return (f"local-only (FiT's lower bound): every client fine-tunes its {size:,} parameters "
                f"({human_bytes(4 * size)} fp32) alone, once, {local_steps(self.cfg)} steps; nothing sent")
