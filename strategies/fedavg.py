"""FedAvg over the packed adapter state, weighted by each client's support-set size."""
from flwr.serverapp.strategy import FedAvg as _FedAvg

from strategies.base import FedFiTMixin
from strategies.registry import STRATEGIES


class FedAvg(FedFiTMixin, _FedAvg):
    pass


@STRATEGIES.register("fedavg")
def make(cfg, **sampling):
    return FedAvg(**sampling)
