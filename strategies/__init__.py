"""Flower server side: stock Flower strategies by name, and the layers fedfit puts around the Grid.

The strategy aggregates plain float32 states; everything else happens around the Grid it is given:
``sampling`` (seeded client choice by partition id), ``codec_layer`` (encode the downlink once per
round, validate and decode every reply), ``metering`` (bytes as serialized), ``nodes`` (which node
holds which partition), ``loop`` (rounds, evaluation, results), ``server_app`` and ``simulate``.
"""
from __future__ import annotations

from typing import Any

from strategies import (bulyan, fedadagrad, fedadam, fedavg, fedavgm, fedmedian, fedprox,  # noqa: F401 (register)
                        fedtrimmedavg, fedyogi, krum, multikrum)
from strategies import dp
from strategies.registry import STRATEGIES

# fedfit samples the clients itself and shows the strategy exactly the sampled nodes (a view of the
# grid): Flower's own sampling must then take all of them and never wait for more.
# strategies built to resist hostile clients: the global head's class statistics are aggregated
# robustly too when one of them runs (fedfit.global_head.GlobalStatistics.robust_filter)
ROBUST = frozenset({"fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"})

SAMPLING = dict(fraction_train=1.0, min_train_nodes=1, fraction_evaluate=1.0, min_evaluate_nodes=1,
                min_available_nodes=1)


def check_options(cfg: dict[str, Any]) -> None:
    """Raise ValueError (one line, what to change) for a strategy the options cannot run."""
    if cfg["strategy"] not in STRATEGIES:
        raise ValueError(f"strategy = {cfg['strategy']!r} is unknown; choose one of: {', '.join(STRATEGIES.names())}")
    k, f = cfg["clients_per_round"], cfg["malicious"]
    if cfg["strategy"] in ("krum", "multikrum") and k < 2 * f + 3:
        raise ValueError(f"{cfg['strategy']} tolerates malicious = {f} with clients_per_round >= 2f + 3 = {2 * f + 3}, "
                         f"got {k}: lower malicious or raise clients_per_round")
    if cfg["strategy"] == "bulyan" and k < 4 * f + 3:
        raise ValueError(f"bulyan tolerates malicious = {f} with clients_per_round >= 4f + 3 = {4 * f + 3}, got {k}: "
                         f"lower malicious or raise clients_per_round")
    if cfg["strategy"] == "multikrum" and cfg["multikrum_keep"] > k:
        raise ValueError(f"multikrum_keep = {cfg['multikrum_keep']} exceeds clients_per_round = {k}")
    dp.check(cfg)


def create_strategy(cfg: dict[str, Any]):
    """The configured stock Flower strategy (inside its DP wrapper when ``dp`` is on)."""
    check_options(cfg)
    return dp.wrap(cfg, STRATEGIES.create(cfg["strategy"], cfg, **SAMPLING))


__all__ = ["STRATEGIES", "SAMPLING", "ROBUST", "check_options", "create_strategy"]
