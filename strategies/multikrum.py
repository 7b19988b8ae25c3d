"""MultiKrum (Blanchard et al. 2017): the mean of the ``multikrum_keep`` states with the best Krum
scores (0 = clients_per_round - malicious)."""
from flwr.serverapp.strategy import MultiKrum

from strategies.registry import STRATEGIES


@STRATEGIES.register("multikrum")
def make(cfg, **sampling) -> MultiKrum:
    keep = int(cfg["multikrum_keep"]) or int(cfg["clients_per_round"]) - int(cfg["malicious"])
    return MultiKrum(num_malicious_nodes=int(cfg["malicious"]), num_nodes_to_select=keep, **sampling)
