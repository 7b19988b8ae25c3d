"""Krum (Blanchard et al. 2017): the one state closest to its n - f - 2 nearest others, tolerating
f = ``malicious`` hostile clients per round (needs clients_per_round > 2f + 2)."""
from flwr.serverapp.strategy import Krum

from strategies.registry import STRATEGIES


@STRATEGIES.register("krum")
def make(cfg, **sampling) -> Krum:
    return Krum(num_malicious_nodes=int(cfg["malicious"]), **sampling)
