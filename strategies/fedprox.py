"""FedProx (Li et al. 2020): FedAvg on the server; clients add ``prox_mu / 2 * ||w - w_global||^2``
(the strategy sends ``proximal-mu`` in every training config)."""
from flwr.serverapp.strategy import FedProx

from strategies.registry import STRATEGIES


@STRATEGIES.register("fedprox")
def make(cfg, **sampling) -> FedProx:
    return FedProx(proximal_mu=float(cfg["prox_mu"]), **sampling)
