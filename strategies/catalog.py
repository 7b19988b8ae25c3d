"""The stock Flower strategies fedfit runs, in one table: name -> Flower's class, the fedfit options it
takes, the constraint its options must meet, whether it resists hostile clients.

A new strategy is one ``Entry`` here. fedfit samples the clients itself and shows a strategy exactly the
sampled nodes, so Flower's own sampling arguments (``SAMPLING``) make it take them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from flwr.serverapp.strategy import (Bulyan, FedAdagrad, FedAdam, FedAvg, FedAvgM, FedMedian, FedProx, FedTrimmedAvg,
                                     FedYogi, Krum, MultiKrum, Strategy)

from fedfit.config import FEDAVG_SPLIT, FEDAVG_STEP_MAX

Options = Callable[[dict[str, Any]], dict[str, Any]]
Check = Callable[[dict[str, Any]], str | None]


@dataclass(frozen=True)
class Entry:
    """One stock strategy: ``cls(**options(cfg), **SAMPLING)``; ``check(cfg)`` returns what to change (one
    line) when the options cannot run it; ``robust``: built to resist hostile clients (the global head's
    statistics are then aggregated robustly too: ``fedfit.global_head``)."""

    cls: Callable[..., Strategy]
    about: str
    options: Options = lambda cfg: {}  # noqa: E731
    check: Check = lambda cfg: None  # noqa: E731
    robust: bool = False


def _dp_step(cfg: dict[str, Any]) -> str | None:
    """FedAvg under DP takes the mean as it is (Flower's noise is sized for it)."""
    if cfg["dp"] != "none" and cfg["server_lr"] not in (-1, 1):
        return (f"dp = {cfg['dp']} adds noise for the mean of the clients' updates: server_lr = {cfg['server_lr']:g} "
                f"would scale the mean after the noise's sensitivity is fixed; set server_lr = 1 (or -1)")
    return None


def _krum_needs(k: int) -> Check:
    """Krum-family constraint: clients_per_round >= k * malicious + 3."""
    def check(cfg: dict[str, Any]) -> str | None:
        n, f = cfg["clients_per_round"], cfg["malicious"]
        if n < k * f + 3:
            return (f"{cfg['strategy']} tolerates malicious = {f} with clients_per_round >= {k}f + 3 = {k * f + 3}, "
                    f"got {n}: lower malicious or raise clients_per_round")
        if cfg["strategy"] == "multikrum" and cfg["multikrum_keep"] > n:
            return f"multikrum_keep = {cfg['multikrum_keep']} exceeds clients_per_round = {n}"
        return None
    return check


SERVER_OPT_LR = 0.01  # server_lr = -1 for fedadam / fedyogi / fedadagrad (FedAvgM's: 1.0)


def server_lr(cfg: dict[str, Any], default: float) -> float:
    """The server's step (``server_lr``; -1: the strategy's ``default``)."""
    return default if cfg["server_lr"] < 0 else float(cfg["server_lr"])


def fedavg_step(cfg: dict[str, Any]) -> float:
    """FedAvg's server step: the global moves this many times the clients' mean update (``server_lr``; -1:
    ``FEDAVG_SPLIT x clients_per_round``, at most ``FEDAVG_STEP_MAX``, with the clients at lr / FEDAVG_SPLIT:
    ``fedfit.federated.fedavg_split``; 1: McMahan et al.'s mean). Under DP always 1: Flower's wrappers add
    noise for the mean's sensitivity."""
    if cfg["dp"] != "none":
        return 1.0
    return server_lr(cfg, float(min(FEDAVG_SPLIT * cfg["clients_per_round"], FEDAVG_STEP_MAX)))


def _fedavg(server_learning_rate: float = 1.0, **kw) -> Strategy:
    """Flower's FedAvg, or with a server step other than 1 Flower's FedAvgM without momentum (the same mean,
    then global + step x (mean - global))."""
    if server_learning_rate == 1.0:
        return FedAvg(**kw)
    return FedAvgM(server_learning_rate=server_learning_rate, server_momentum=0.0, **kw)


def _server_opt(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"eta": server_lr(cfg, SERVER_OPT_LR), "eta_l": float(cfg["lr"])}


CATALOG: dict[str, Entry] = {
    "fedavg": Entry(_fedavg, "FedAvg (McMahan et al. 2017): the mean of the clients' states weighted by num-examples, "
                             "the global moved server_lr times the mean update (Reddi et al. 2021; -1: "
                             "2 x clients_per_round up to 20 with the clients at lr / 2; 1: the mean itself)",
                    lambda cfg: {"server_learning_rate": fedavg_step(cfg)}, _dp_step),
    "fedprox": Entry(FedProx, "FedProx (Li et al. 2020): FedAvg; clients add prox_mu / 2 ||w - w_global||^2 "
                              "(the strategy sends proximal-mu)",
                     lambda cfg: {"proximal_mu": float(cfg["prox_mu"])}),
    "fedadam": Entry(FedAdam, "FedAdam (Reddi et al. 2021): Adam on the server over the mean update, step server_lr",
                     _server_opt),
    "fedyogi": Entry(FedYogi, "FedYogi (Reddi et al. 2021): Yogi on the server over the mean update, step server_lr",
                     _server_opt),
    "fedadagrad": Entry(FedAdagrad, "FedAdagrad (Reddi et al. 2021): Adagrad on the server over the mean update, "
                                    "step server_lr", _server_opt),
    "fedavgm": Entry(FedAvgM, "FedAvgM (Hsu et al. 2019): FedAvg with server momentum and step server_lr (-1: 1.0); "
                              "server_momentum = 0: FedAvg's mean update times server_lr",
                     lambda cfg: {"server_learning_rate": server_lr(cfg, 1.0),
                                  "server_momentum": float(cfg["server_momentum"])}),
    "fedmedian": Entry(FedMedian, "FedMedian (Yin et al. 2018): the coordinate-wise median of the clients' states",
                       robust=True),
    "fedtrimmedavg": Entry(FedTrimmedAvg, "FedTrimmedAvg (Yin et al. 2018): per coordinate, the trim_beta fraction "
                                          "of lowest and highest values dropped, the rest averaged",
                           lambda cfg: {"beta": float(cfg["trim_beta"])}, robust=True),
    "krum": Entry(Krum, "Krum (Blanchard et al. 2017): the one state closest to its n - f - 2 nearest others, "
                        "f = malicious", lambda cfg: {"num_malicious_nodes": int(cfg["malicious"])},
                  _krum_needs(2), robust=True),
    "multikrum": Entry(MultiKrum, "MultiKrum (Blanchard et al. 2017): the mean of the multikrum_keep states with the "
                                  "best Krum scores (0 = clients_per_round - malicious)",
                       lambda cfg: {"num_malicious_nodes": int(cfg["malicious"]), "num_nodes_to_select":
                                    int(cfg["multikrum_keep"]) or int(cfg["clients_per_round"]) - int(cfg["malicious"])},
                       _krum_needs(2), robust=True),
    "bulyan": Entry(Bulyan, "Bulyan (El Mhamdi et al. 2018): MultiKrum selection, then a trimmed mean around the "
                            "median, f = malicious", lambda cfg: {"num_malicious_nodes": int(cfg["malicious"])},
                    _krum_needs(4), robust=True),
}

SAMPLING = dict(fraction_train=1.0, min_train_nodes=1, fraction_evaluate=1.0, min_evaluate_nodes=1,
                min_available_nodes=1)

ROBUST = frozenset(name for name, e in CATALOG.items() if e.robust)


def names() -> list[str]:
    return sorted(CATALOG)


def problem(cfg: dict[str, Any]) -> str | None:
    """What to change (one line) when ``cfg['strategy']`` is unknown or its options cannot run it."""
    entry = CATALOG.get(cfg["strategy"])
    if entry is None:
        return f"strategy = {cfg['strategy']!r} is unknown; choose one of: {', '.join(names())}"
    return entry.check(cfg)


def create(cfg: dict[str, Any]) -> Strategy:
    """The stock Flower strategy ``cfg['strategy']`` with its options, taking every node it is shown."""
    entry = CATALOG[cfg["strategy"]]
    return entry.cls(**entry.options(cfg), **SAMPLING)
