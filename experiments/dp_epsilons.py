"""Both epsilons of fedfit's DP (strategies/dp.py) for a range of noise multipliers, without training:
epsilon depends only on the noise multiplier, the sampling (clients_per_round of num_clients), the number
of private releases (rounds) and delta. README's privacy section quotes this table. The amplified
epsilon holds only for a secret sample (dp_randomness = secret, fedfit's default under DP): this
script gives it for any run, seeded ones included, as what a deployment drawing its sample secretly
would spend. The two columns are of different neighbour relations (add/remove one; replace one).

    python experiments/dp_epsilons.py [key=value ...]      # default: the privacy sweep's federation
"""
from __future__ import annotations

import sys

from fedfit.config import load_config
from fedfit.format import markdown_table
from strategies.dp import Ledger, accounting_problem, target_delta


def main(argv: list[str]) -> None:
    problem = accounting_problem()
    if problem:
        sys.exit(f"dp_epsilons: {problem}")
    base = {"dp": "server", "num_clients": 40, "clients_per_round": 10, "rounds": 10}
    cfg = load_config(overrides=[f"{k}={v}" for k, v in base.items()] + argv)
    cfg["dp_randomness"] = "secret"  # the amplified epsilon of a secret sample, whatever the run chose
    rows = []
    for z in (0.1, 0.3, 1.0, 2.0, 4.0, 8.0):
        ledger = Ledger({**cfg, "dp_noise": z}, releases=cfg["rounds"])
        plain, sampled = ledger.epsilon(None), ledger.epsilon_sampled(None)
        rows.append([f"{z:g}", f"{plain:.3g}", f"{sampled:.3g}"])
    print(f"{cfg['rounds']} releases, {cfg['clients_per_round']} of {cfg['num_clients']} clients per round, "
          f"delta = {target_delta(cfg):g}\n")
    print(markdown_table(["noise multiplier z", "epsilon: add/remove one, no amplification",
                          "epsilon: replace one, k of n secret sample (z / 2)"], rows, "rrr"))


if __name__ == "__main__":
    main(sys.argv[1:])
