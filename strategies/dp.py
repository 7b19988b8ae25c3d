"""Differential privacy: Flower's fixed-clipping wrappers around the configured strategy.

``dp = "server"``: the server clips every client's update to L2 norm ``dp_clip`` (Flower's
``DifferentialPrivacyServerSideFixedClipping``); ``dp = "client"``: clients clip their own update
(``DifferentialPrivacyClientSideFixedClipping`` + ``fixedclipping_mod`` in ``clients.mods``). Either
way Gaussian noise of std ``dp_noise * dp_clip / clients_per_round`` is added to the aggregate, and
Flower's RDP accountant (``dp-accounting``) composes one Gaussian release per aggregated round:
``epsilon(cfg)`` at delta ``dp_delta`` (0 = 1 / num_clients). Flower's accountant requires FedAvg's
aggregation with equal client weights and counts no amplification by sampling (a conservative
epsilon); rounds in which a sampled client fails are not aggregated (no release, no epsilon spent).
"""
from __future__ import annotations

from typing import Any

from flwr.serverapp import NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.serverapp.strategy import (DifferentialPrivacyClientSideFixedClipping,
                                     DifferentialPrivacyServerSideFixedClipping, Strategy)

WRAPPERS = {"server": DifferentialPrivacyServerSideFixedClipping, "client": DifferentialPrivacyClientSideFixedClipping}
ACCOUNTED = ("fedavg", "fedprox")  # strategies that use FedAvg.aggregate_train, as the accountant requires


def target_delta(cfg: dict[str, Any]) -> float:
    return cfg["dp_delta"] or 1.0 / max(cfg["num_clients"], 2)


def check(cfg: dict[str, Any]) -> None:
    """Raise ValueError when the DP options cannot be honoured."""
    if cfg["dp"] == "none":
        return
    if cfg["strategy"] not in ACCOUNTED:
        raise ValueError(f"dp = {cfg['dp']} works with strategy = {' or '.join(ACCOUNTED)} (Flower's privacy "
                         f"accountant requires FedAvg's aggregation), not {cfg['strategy']}")


def wrap(cfg: dict[str, Any], strategy: Strategy) -> Strategy:
    """``strategy`` inside the configured DP wrapper (with an RDP accountant), or as it is."""
    if cfg["dp"] == "none":
        return strategy
    from flwr.serverapp import RdpAccountant

    accountant = RdpAccountant(PrivacyConfig(target_delta=target_delta(cfg), population_size=cfg["num_clients"],
                                             neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                             sampling_method=SamplingMethod.NO_AMPLIFICATION))
    return WRAPPERS[cfg["dp"]](strategy, noise_multiplier=float(cfg["dp_noise"]), clipping_norm=float(cfg["dp_clip"]),
                               num_sampled_clients=int(cfg["clients_per_round"]), accountant=accountant)


def epsilon(strategy: Strategy) -> float | None:
    """Cumulative epsilon spent so far (at the configured delta), None without DP."""
    spent = strategy.privacy_spent() if hasattr(strategy, "privacy_spent") else None
    return None if spent is None else float(spent.epsilon)
