"""The stock strategy over training replies: the configured Flower strategy (inside its DP wrapper when
``dp`` is on, ``strategies.dp``), its noise drawn from the run's seed, and the DP ledger of the releases.

Flower's DP wrappers draw their noise from numpy's global generator: it is seeded from the run's tree for
each round (and put back after), so DP runs are reproducible and resumable too - or, under secret
sampling, from the operating system's entropy (noise that follows from the seed hides nothing).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Message

from fedfit import seeding, wire
from strategies import create_strategy, dp
from strategies.round_log import RoundLog


class Aggregator:
    """``aggregate(round, replies, rnd)`` -> the aggregated float32 (n,) state, or None (the strategy made
    none; a malformed aggregate is recorded in ``rnd``). Its state (checkpointed): the strategy object
    (server moments, momentum, the DP wrapper and its accountant); the ``ledger`` saves its own."""

    def __init__(self, cfg: dict[str, Any], size: int, secret: bool):
        self.cfg, self.size, self.secret = cfg, size, secret
        self.strategy = create_strategy(cfg)
        self.ledger = dp.Ledger(cfg)  # private releases -> both epsilons

    def aggregate(self, server_round: int, replies: list[Message], rnd: RoundLog) -> np.ndarray | None:
        """``replies``: validated training replies as ``strategies.codec_layer.for_strategy`` makes them."""
        saved = np.random.get_state()
        np.random.seed(None if self.secret else seeding.derive(self.cfg["seed"], "aggregate", server_round))
        try:
            new, _ = self.strategy.aggregate_train(server_round, replies)
        finally:
            np.random.set_state(saved)
        if self.cfg["dp"] != "none":
            self.ledger.after_aggregate(self.strategy, new is not None)
        if new is None:
            return None
        try:
            return wire.aggregated_state(new, self.size)
        except ValueError as e:
            rnd.failures.append({"client": -1, "phase": wire.TRAIN, "kind": "aggregate", "reason": str(e)})
            return None

    def epsilons(self) -> dict[str, float | None]:
        """The record's ``dp_epsilon`` and ``dp_epsilon_sampled`` so far."""
        return {"dp_epsilon": self.ledger.epsilon(self.strategy),
                "dp_epsilon_sampled": self.ledger.epsilon_sampled(self.strategy)}

    def state(self) -> dict[str, Any]:
        return {"strategy": self.strategy}

    def load_state(self, state: dict[str, Any]) -> None:
        self.strategy = state["strategy"]
