"""``fedfit dp-epsilon``: both epsilons a DP federation would spend, from its options alone, without training.

Epsilon depends only on the noise multiplier z, the sampling (``clients_per_round`` of ``num_clients``), the
number of private releases (``rounds``: one per aggregated round) and delta (``dp_delta``; 0: 1 / num_clients),
by the accountants of ``strategies.dp`` that a run reports. Two columns, of two neighbour relations (not one
unit): add/remove one without amplification (``dp_epsilon``), and replace one with the amplification of a
k-of-n sample drawn secretly (``dp_epsilon_sampled``, z / 2). The second holds only for a secret sample
(``dp_randomness = secret``, the default under DP); it is given here for any options, seeded ones included,
as what a deployment drawing its sample secretly would spend.
"""
from __future__ import annotations

from typing import Any, Sequence

NOISES = (0.1, 0.3, 1.0, 2.0, 4.0, 8.0)  # noise multipliers tabled by default


def epsilons(cfg: dict[str, Any], noises: Sequence[float] = NOISES) -> list[tuple[float, float, float | None]]:
    """Per noise multiplier z: (z, epsilon add/remove one without amplification, epsilon replace one of the
    secret k-of-n sample, None where the sampling is not uniform) after ``cfg["rounds"]`` releases.
    ``dp = none`` counts as server-side DP (the clipping side does not change epsilon)."""
    from strategies.dp import Ledger

    cfg = {**cfg, "dp": "server" if cfg["dp"] == "none" else cfg["dp"], "dp_randomness": "secret"}
    rows = []
    for z in noises:
        ledger = Ledger({**cfg, "dp_noise": float(z)}, releases=cfg["rounds"])
        rows.append((float(z), ledger.epsilon(None), ledger.epsilon_sampled(None)))
    return rows


def table(cfg: dict[str, Any], noises: Sequence[float] = NOISES) -> str:
    """A line naming the releases, the sample and delta, then the Markdown table of ``epsilons``."""
    from fedfit.format import markdown_table
    from strategies.dp import target_delta

    rows = [[f"{z:g}", f"{plain:.3g}", "n/a" if sampled is None else f"{sampled:.3g}"]
            for z, plain, sampled in epsilons(cfg, noises)]
    return (f"{cfg['rounds']} releases, {cfg['clients_per_round']} of {cfg['num_clients']} clients per round, "
            f"delta = {target_delta(cfg):g}\n\n"
            + markdown_table(["noise multiplier z", "epsilon: add/remove one, no amplification",
                              "epsilon: replace one, k of n secret sample (z / 2)"], rows, "rrr"))
