"""FedAvgM (Hsu et al. 2019): FedAvg with server momentum ``server_momentum`` (server lr 1.0)."""
from flwr.serverapp.strategy import FedAvgM

from strategies.registry import STRATEGIES


@STRATEGIES.register("fedavgm")
def make(cfg, **sampling) -> FedAvgM:
    return FedAvgM(server_learning_rate=1.0, server_momentum=float(cfg["server_momentum"]), **sampling)
