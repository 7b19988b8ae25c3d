"""FedAvgM: server momentum (``server_momentum``) over the averaged update."""
from flwr.serverapp.strategy import FedAvgM as _FedAvgM

from strategies.base import FedFiTMixin
from strategies.registry import STRATEGIES


class FedAvgM(FedFiTMixin, _FedAvgM):
    pass


@STRATEGIES.register("fedavgm")
def make(cfg, **sampling):
    return FedAvgM(server_learning_rate=1.0, server_momentum=float(cfg["server_momentum"]), **sampling)
