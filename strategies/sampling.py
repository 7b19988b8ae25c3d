"""Seeded client sampling by partition id, and the view of the grid a strategy samples from.

Clients are known by partition id everywhere. ``ClientSampler`` draws each round's training and
evaluation clients from fedfit's own seeded streams (``fedfit.seeding``), so the same options give the
same clients in every run, whatever node ids Flower drew - except the training sample under DP's
secret sampling (``secret=True``, ``fedfit.seeding.secret``), drawn from the operating system's entropy
so that nobody who knows the seed can recompute it. ``GridView`` shows a strategy only the
nodes of the sampled clients, so the stock strategy's own sampling (``fraction = 1``) takes exactly
those and never waits for more.
"""
from __future__ import annotations

from collections.abc import Iterable

from fedfit import seeding


class ClientSampler:
    """Which partitions train and evaluate in round r: sorted int lists, a function of (seed, r); with
    ``secret`` the training sample comes from the OS's entropy instead (the evaluation sample stays seeded)."""

    def __init__(self, seed: int, num_clients: int, secret: bool = False):
        self.seed, self.num_clients, self.secret = int(seed), int(num_clients), bool(secret)

    def _sample(self, purpose: str, server_round: int, k: int, pool: list[int] | None = None,
                secret: bool = False) -> list[int]:
        pool = list(range(self.num_clients)) if pool is None else sorted(pool)
        if k <= 0 or k >= len(pool):
            return pool
        rng = seeding.os_generator() if secret else seeding.generator(self.seed, purpose, server_round)
        return sorted(pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False))

    def train(self, server_round: int, k: int, pool: list[int] | None = None) -> list[int]:
        """``k`` distinct partitions of ``pool`` (default: every training client; all when k >= its size)."""
        return self._sample("sample-train", server_round, k, pool, secret=self.secret)

    def evaluate(self, server_round: int, k: int) -> list[int]:
        """``k`` distinct partitions to evaluate (k = 0: all)."""
        return self._sample("sample-evaluate", server_round, k)


class GridView:
    """A Flower ``Grid`` that lists only ``node_ids``; everything else is the wrapped grid's."""

    def __init__(self, grid, node_ids: Iterable[int]):
        self._grid = grid
        self._nodes = [int(n) for n in node_ids]

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def __getattr__(self, name):
        return getattr(self._grid, name)
