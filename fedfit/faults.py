"""Simulated faults and attacks, every choice a function of (seed, round, partition id) - but a training
client's dropout and delay under DP's secret sampling (``fedfit.seeding.secret``).

* dropout: with probability ``dropout`` per client-round a sampled client fails before training (its
  reply is an error marked as injected, so it is counted apart from real failures);
* stragglers: with probability ``straggler`` a client sleeps ``straggler_delay_s`` seconds first (past
  ``timeout_s`` it counts as a timeout);
* replayed failures: with ``replay_failures = RUN_DIR`` every (round, phase, partition id) that failed in
  that run's rounds.jsonl (a deployment's timeouts, errors, absences) fails here the same way as a dropout,
  in training and evaluation alike;
* poisoning: a fixed, seeded ``poison_fraction`` of the training clients is hostile for the whole run
  and sends, instead of its update u = new - received:
  ``scale``: poison_scale * u; ``signflip``: -u; ``noise``: Gaussian noise of poison_scale times the
  update's standard deviation; ``nan``: non-finite values (the server's validation must drop them).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from fedfit import seeding
from fedfit.options import OPTIONS

ATTACKS = OPTIONS["poison"].choices  # ("scale", "signflip", "noise", "nan"), declared with the option


def hostile_clients(cfg: dict[str, Any]) -> list[int]:
    """Sorted partition ids of the hostile training clients (round(poison_fraction * num_clients))."""
    k = int(round(cfg["poison_fraction"] * cfg["num_clients"]))
    if k <= 0:
        return []
    rng = seeding.generator(cfg["seed"], "poison")
    return sorted(int(i) for i in rng.choice(cfg["num_clients"], size=min(k, cfg["num_clients"]), replace=False))


def fault_draw(cfg: dict[str, Any], server_round: int, partition_id: int) -> tuple[bool, float]:
    """(drops out, seconds of delay) for this client's training in ``server_round``; from the OS's entropy
    under DP's secret sampling (``seeding.secret``: a seeded draw and the round's failure count would
    tell who was sampled)."""
    if cfg["dropout"] <= 0 and cfg["straggler"] <= 0:
        return False, 0.0
    rng = seeding.os_generator() if seeding.secret(cfg) else seeding.generator(cfg["seed"], "fault", server_round,
                                                                               partition_id)
    u_drop, u_slow = rng.random(2)
    return bool(u_drop < cfg["dropout"]), float(cfg["straggler_delay_s"]) if u_slow < cfg["straggler"] else 0.0


def replayed_failures(cfg: dict[str, Any]) -> frozenset[tuple[int, str, int]]:
    """(round, phase, partition id) of every client failure recorded in ``cfg["replay_failures"]``'s
    rounds.jsonl ("train" / "evaluate" / ...: the phase as recorded); empty without one. ValueError when the
    folder holds no rounds."""
    path = cfg.get("replay_failures", "")
    return _failures_in(str(Path(path).resolve())) if path else frozenset()


@functools.lru_cache(maxsize=4)
def _failures_in(run_dir: str) -> frozenset[tuple[int, str, int]]:
    from fedfit.results import read_rounds

    rows = read_rounds(run_dir, tolerate_torn_tail=True)
    if not rows:
        raise ValueError(f"replay_failures = {run_dir}: no rounds.jsonl with a round there")
    return frozenset((int(r["round"]), str(f["phase"]), int(f["client"])) for r in rows
                     for f in r.get("failures") or () if isinstance(f.get("client"), int) and f["client"] >= 0)


def poisoned_update(cfg: dict[str, Any], update: np.ndarray, server_round: int, partition_id: int) -> np.ndarray:
    """What a hostile client sends instead of its float32 update ``update`` (see module docstring)."""
    kind, scale = cfg["poison"], float(cfg["poison_scale"])
    if kind == "scale":
        out = update * scale
    elif kind == "signflip":
        out = -update
    elif kind == "noise":
        rng = seeding.generator(cfg["seed"], "poison-noise", server_round, partition_id)
        out = rng.normal(0.0, scale * max(float(update.std()), 1e-8), update.shape)
    elif kind == "nan":
        out = np.full_like(update, np.nan)
    else:
        raise ValueError(f"unknown attack {kind!r}; choose one of: {', '.join(ATTACKS)}")
    return out.astype(np.float32)
