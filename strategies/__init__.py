"""Flower server side: stock Flower strategies by name, and the layers fedfit puts around the Grid.

The strategy aggregates plain float32 states; everything else happens around the Grid it is given:
``catalog`` (the strategies: class, options, constraints, robustness, in one table), ``sampling``
(seeded client choice by partition id), ``codec_layer`` (encode the downlink once per round, validate
and decode every reply), ``metering`` (bytes as serialized), ``nodes`` (which node holds which
partition), ``loop`` (rounds, evaluation, results), ``server_app`` and ``simulate`` (with ``pool``, its
Ray actors, and ``ray_cluster``, what fits on a Ray cluster).
"""
from __future__ import annotations

from typing import Any

from strategies import catalog, dp
from strategies.catalog import CATALOG, ROBUST, SAMPLING


def check_options(cfg: dict[str, Any]) -> None:
    """Raise ValueError (one line, what to change) for a strategy the options cannot run."""
    problem = catalog.problem(cfg)
    if problem:
        raise ValueError(problem)
    dp.check(cfg)


def create_strategy(cfg: dict[str, Any]):
    """The configured stock Flower strategy (inside its DP wrapper when ``dp`` is on)."""
    check_options(cfg)
    return dp.wrap(cfg, catalog.create(cfg))


__all__ = ["CATALOG", "SAMPLING", "ROBUST", "check_options", "create_strategy"]
