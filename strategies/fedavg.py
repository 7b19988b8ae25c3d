"""FedAvg (McMahan et al. 2017): the mean of the clients' states weighted by ``num-examples``."""
from flwr.serverapp.strategy import FedAvg

from strategies.registry import STRATEGIES


@STRATEGIES.register("fedavg")
def make(cfg, **sampling) -> FedAvg:
    return FedAvg(**sampling)
