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
clipped update moves the sum by up to 2 x clip: the event's noise multiplier is ``z / 2`` (dp-accounting
0.6.0's RDP accountant takes z as std / sensitivity for that event; its PLD accountant doubles the
sensitivity for replace-one itself). It holds only when every client can be sampled every round: with
``availability``, ``over_select`` or ``deadline_s`` the sample is no longer uniform and
``epsilon_sampled`` is None. And only when the sample is secret: ``dp_randomness = secret`` (the
default) draws it, the noise and training faults from the operating system's entropy and writes the
trained clients nowhere (``strategies.loop``); with ``dp_randomness = seeded`` anyone who knows the seed
knows the sample, and ``epsilon_sampled`` is None.

The two epsilons are of different neighbour relations: ``epsilon`` of add/remove-one (a client's data
present or absent), ``epsilon_sampled`` of replace-one (a client's data swapped for another's; with n
public). Neither covers what clients send for evaluation (accuracies, and with ``global_eval`` their
class statistics and query features) nor the training metrics (loss, update norms).

``accounting_problem()`` (run by ``check`` before any DP run) recomputes ``epsilon_sampled``'s
conversion on two small reference cases and compares it with dp-accounting's PLD accountant
(``REFERENCE``), so that a library whose RDP accountant starts doubling the sensitivity itself (fedfit
would then halve z twice) or whose PLD accountant stops stops the run in one line.
"""
from __future__ import annotations

import functools
from typing import Any

from flwr.serverapp import NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.serverapp.strategy import (DifferentialPrivacyClientSideFixedClipping,
                                     DifferentialPrivacyServerSideAdaptiveClipping,
                                     DifferentialPrivacyServerSideFixedClipping, Strategy)

from fedfit import seeding

WRAPPERS = {"server": DifferentialPrivacyServerSideFixedClipping, "client": DifferentialPrivacyClientSideFixedClipping}
ACCOUNTED = ("fedavg", "fedprox")  # strategies that use FedAvg.aggregate_train, as the accountant requires


def target_delta(cfg: dict[str, Any]) -> float:
    return cfg["dp_delta"] or 1.0 / max(cfg["num_clients"], 2)


def check(cfg: dict[str, Any]) -> None:
    """Raise ValueError when the DP options cannot be honoured (or the accountants disagree)."""
    if cfg["dp"] == "none":
        return
    problem = accounting_problem()
    if problem:
        raise ValueError(problem)
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
    sampling without replacement (module docstring). ``releases`` and ``seen`` are its state (``state()``,
    checkpointed)."""

    def __init__(self, cfg: dict[str, Any], releases: int = 0):
        self.cfg, self.releases = cfg, int(releases)
        self.seen = 0  # Flower's accountant's releases at the last look (fixed clipping)

    def state(self) -> dict[str, int]:
        return {"releases": self.releases, "seen": self.seen}

    def load_state(self, state: dict[str, Any]) -> None:
        self.releases, self.seen = int(state["releases"]), int(state["seen"])

    def after_aggregate(self, strategy: Strategy, aggregated: bool) -> None:
        """Call once per training round, after ``aggregate_train`` (``aggregated``: it returned a state)."""
        acc = getattr(strategy, "accountant", None)
        if acc is not None:  # fixed clipping: Flower's accountant decided whether the round was a release
            self.releases += acc.num_releases - self.seen
            self.seen = acc.num_releases
        elif aggregated:
            self.releases += 1

    def _epsilon(self, sampled: bool) -> float:
        # adaptive: update + count noise together (module docstring)
        return rdp_epsilon(int(self.cfg["num_clients"]), int(self.cfg["clients_per_round"]),
                           float(self.cfg["dp_noise"]), self.releases, target_delta(self.cfg), sampled)

    def epsilon(self, strategy: Strategy) -> float | None:
        if self.cfg["dp"] == "none":
            return None
        flower = epsilon(strategy)
        return flower if flower is not None else self._epsilon(sampled=False)

    def epsilon_sampled(self, strategy: Strategy) -> float | None:
        """None without DP, without uniform sampling, or with the seeded (public) sample."""
        if not seeding.secret(self.cfg) or not sampled_is_uniform(self.cfg):
            return None
        return self._epsilon(sampled=True)


def rdp_epsilon(n: int, k: int, z: float, releases: int, delta: float, sampled: bool) -> float:
    """Epsilon at ``delta`` of ``releases`` Gaussian releases of noise multiplier ``z`` (std / clip), by
    Flower's RDP accountant: ``sampled``: k of n without replacement, replace-one (z / 2, module
    docstring); else add/remove-one without amplification."""
    from flwr.serverapp import GaussianPrivacyEvent, RdpAccountant

    if releases == 0:
        return 0.0
    if sampled:
        relation, method, z = NeighboringRelation.REPLACE_ONE, SamplingMethod.WITHOUT_REPLACEMENT, z / 2
    else:
        relation, method = NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION
    acc = RdpAccountant(PrivacyConfig(target_delta=delta, population_size=n, neighboring_relation=relation,
                                      sampling_method=method))
    acc.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=k, population_size=n), releases)
    return float(acc.get_privacy_spent().epsilon)


# The start-up check's cases: (n, k, z, releases, delta, accepted range of RDP epsilon / PLD epsilon).
# k = n: fixed-size sampling of everyone is the replace-one Gaussian the PLD accountant computes
#   (GaussianDpEvent(z) under REPLACE_ONE: it doubles the sensitivity itself); the RDP conversion is an
#   upper bound, 1.07x the PLD's here; a doubling inside the RDP accountant gives 2.7x, no halving 0.45x.
# k < n: the PLD accountant has no fixed-size event; its Poisson-sampled Gaussian at z / 2 under
#   add/remove-one (the pair (q N(2 clip) + (1 - q) N(0), N(0)), which bounds one fixed-size round under
#   replace-one) is the reference; the RDP bound for sampling without replacement is looser, 1.81x here;
#   a doubling inside gives 4.1x, no halving 0.78x. The range only has to tell a factor 2 in z apart.
REFERENCE = ((10, 10, 2.0, 10, 1e-5, (0.99, 1.25)), (10, 5, 4.0, 10, 1e-5, (0.99, 2.5)))


def pld_epsilon(n: int, k: int, z: float, releases: int, delta: float) -> float:
    """The start-up check's reference (``REFERENCE``): dp-accounting's PLD accountant, the noise multiplier
    ``z`` as fedfit states it (std / clip)."""
    from dp_accounting import dp_event, pld
    from dp_accounting.privacy_accountant import NeighboringRelation as Rel

    if k >= n:
        acc = pld.PLDAccountant(Rel.REPLACE_ONE, value_discretization_interval=1e-3)
        acc.compose(dp_event.GaussianDpEvent(z), releases)
    else:
        acc = pld.PLDAccountant(Rel.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-3)
        acc.compose(dp_event.PoissonSampledDpEvent(k / n, dp_event.GaussianDpEvent(z / 2)), releases)
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=1)
def accounting_problem() -> str | None:
    """None when fedfit's sampled epsilon (RDP, z / 2) agrees with the PLD accountant on every ``REFERENCE``
    case; else one line saying where (computed once per process, ~0.6 s)."""
    import importlib.metadata

    version = importlib.metadata.version("dp-accounting")
    for n, k, z, releases, delta, (lo, hi) in REFERENCE:
        ours, ref = rdp_epsilon(n, k, z, releases, delta, sampled=True), pld_epsilon(n, k, z, releases, delta)
        if not lo * ref <= ours <= hi * ref:
            return (f"dp-accounting {version}: the sampled epsilon's RDP conversion (z / 2 for replace-one) gives "
                    f"{ours:.3g} where the PLD accountant gives {ref:.3g} ({k} of {n}, z = {z:g}, {releases} releases, "
                    f"delta = {delta:g}; accepted {lo:g}x to {hi:g}x): the library changed how it treats replace-one "
                    f"neighbours; install dp-accounting==0.6.0 (pyproject.toml) or fix strategies/dp.py")
    return None
