"""Differential privacy: Flower's clipping wrappers around the configured strategy, and two epsilons.

``dp = "server"``: the server clips every client's update to L2 norm ``dp_clip`` (Flower's
``DifferentialPrivacyServerSideFixedClipping``); ``dp = "client"``: clients clip their own update
(``DifferentialPrivacyClientSideFixedClipping`` + ``fixedclipping_mod`` in ``clients.mods``). Either
way Gaussian noise of std ``dp_noise * dp_clip / clients_per_round`` is added to the aggregate, and
Flower's RDP accountant (``dp-accounting``) composes one Gaussian release per aggregated round:
``epsilon(cfg)`` at delta ``dp_delta`` (0 = 1 / num_clients). Flower's accountant requires FedAvg's
aggregation with equal client weights and counts no amplification by sampling (a conservative
epsilon); rounds in which a sampled client fails are not aggregated (no release, no epsilon spent).

``dp_clipping = "adaptive"`` (server side): Flower's ``DifferentialPrivacyServerSideAdaptiveClipping``
(Andrew et al. 2021): the clipping norm starts at ``dp_clip`` and follows the median update norm, learnt
from a noisy count of clipped clients (std ``max(clients_per_round / 20, dp_noise)``: the paper's k / 20
cannot pay for z >= 2 x that on few clients). The wrapper raises the update's noise multiplier so that the
update and the count together are one Gaussian mechanism of multiplier ``dp_noise`` (their Theorem 1), so
``Ledger`` accounts it as such (the wrapper has no accountant of its own).

``Ledger`` adds the epsilon for the sampling the server really does - ``clients_per_round`` of the
``num_clients`` training clients, uniformly, without replacement, every round - with Flower's RDP
accountant in its ``without-replacement`` mode (dp-accounting's ``SampledWithoutReplacementDpEvent``,
Wang, Balle & Kasiviswanathan 2019). That mode needs replace-one neighbours, under which one client's
clipped update moves the sum by up to 2 x clip: the event's noise multiplier is ``z / 2``. It holds only
when every client can be sampled every round: with ``availability``, ``over_select`` or ``deadline_s``
the sample is no longer uniform and ``epsilon_sampled`` is None.
"""
from __future__ import annotations

from typing import Any

from flwr.serverapp import NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.serverapp.strategy import (DifferentialPrivacyClientSideFixedClipping,
                                     DifferentialPrivacyServerSideAdaptiveClipping,
                                     DifferentialPrivacyServerSideFixedClipping, Strategy)

WRAPPERS = {"server": DifferentialPrivacyServerSideFixedClipping, "client": DifferentialPrivacyClientSideFixedClipping}
ACCOUNTED = ("fedavg", "fedprox")  # strategies that use FedAvg.aggregate_train, as the accountant requires


def target_delta(cfg: dict[str, Any]) -> float:
    return cfg["dp_delta"] or 1.0 / max(cfg["num_clients"], 2)


def check(cfg: dict[str, Any]) -> None:
    """Raise ValueError when the DP options cannot be honoured."""
    if cfg["dp"] == "none":
        return
    if cfg["dp_clipping"] == "adaptive" and cfg["dp"] != "server":
        raise ValueError("dp_clipping = adaptive is Flower's server-side adaptive clipping: set dp = server")
    if cfg["strategy"] not in ACCOUNTED:
        raise ValueError(f"dp = {cfg['dp']} works with strategy = {' or '.join(ACCOUNTED)} (Flower's privacy "
                         f"accountant requires FedAvg's aggregation), not {cfg['strategy']}")


def wrap(cfg: dict[str, Any], strategy: Strategy) -> Strategy:
    """``strategy`` inside the configured DP wrapper (with an RDP accountant), or as it is."""
    if cfg["dp"] == "none":
        return strategy
    if cfg["dp_clipping"] == "adaptive":
        return DifferentialPrivacyServerSideAdaptiveClipping(
            strategy, noise_multiplier=float(cfg["dp_noise"]), num_sampled_clients=int(cfg["clients_per_round"]),
            initial_clipping_norm=float(cfg["dp_clip"]),
            clipped_count_stddev=max(int(cfg["clients_per_round"]) / 20, float(cfg["dp_noise"])))
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


def sampled_is_uniform(cfg: dict[str, Any]) -> bool:
    """Does the server sample clients_per_round of num_clients uniformly without replacement every round?"""
    return (cfg["availability"] == "always" and cfg["over_select"] == 0 and float(cfg["deadline_s"]) == 0
            and str(cfg["devices"]) in ("mobile", "uniform"))  # a trace may take clients offline


class Ledger:
    """Counts the private releases (aggregated DP rounds) and gives both epsilons at the run's delta:
    ``epsilon()`` without amplification (Flower's accountant for fixed clipping; for adaptive clipping
    the same model, by this class) and ``epsilon_sampled()`` with fixed-size
    sampling without replacement (module docstring). ``releases`` and ``seen`` are its state (checkpointed)."""

    def __init__(self, cfg: dict[str, Any], releases: int = 0):
        self.cfg, self.releases = cfg, int(releases)
        self.seen = 0  # Flower's accountant's releases at the last look (fixed clipping)

    def after_aggregate(self, strategy: Strategy, aggregated: bool) -> None:
        """Call once per training round, after ``aggregate_train`` (``aggregated``: it returned a state)."""
        acc = getattr(strategy, "accountant", None)
        if acc is not None:  # fixed clipping: Flower's accountant decided whether the round was a release
            self.releases += acc.num_releases - self.seen
            self.seen = acc.num_releases
        elif aggregated:
            self.releases += 1

    def _epsilon(self, sampled: bool) -> float:
        from flwr.serverapp import GaussianPrivacyEvent, RdpAccountant

        z = float(self.cfg["dp_noise"])  # adaptive: update + count noise together (module docstring)
        n, k = int(self.cfg["num_clients"]), int(self.cfg["clients_per_round"])
        if self.releases == 0:
            return 0.0
        if sampled:
            relation, method, z = NeighboringRelation.REPLACE_ONE, SamplingMethod.WITHOUT_REPLACEMENT, z / 2
        else:
            relation, method = NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION
        acc = RdpAccountant(PrivacyConfig(target_delta=target_delta(self.cfg), population_size=n,
                                          neighboring_relation=relation, sampling_method=method))
        acc.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=k, population_size=n), self.releases)
        return float(acc.get_privacy_spent().epsilon)

    def epsilon(self, strategy: Strategy) -> float | None:
        if self.cfg["dp"] == "none":
            return None
        flower = epsilon(strategy)
        return flower if flower is not None else self._epsilon(sampled=False)

    def epsilon_sampled(self, strategy: Strategy) -> float | None:
        if self.cfg["dp"] == "none" or not sampled_is_uniform(self.cfg):
            return None
        return self._epsilon(sampled=True)
