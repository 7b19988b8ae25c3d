"""FedProx: FedAvg on the server; clients add ``prox_mu / 2 * ||w - w_global||^2`` over the adapter
(the server sends ``proximal-mu`` in every training config)."""
from flwr.serverapp.strategy import FedProx as _FedProx

from strategies.base import FedFiTMixin
from strategies.registry import STRATEGIES


class FedProx(FedFiTMixin, _FedProx):
    pass


@STRATEGIES.register("fedprox")
def make(cfg, **sampling):
    return FedProx(proximal_mu=float(cfg["prox_mu"]), **sampling)
