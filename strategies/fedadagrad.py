"""FedAdagrad (Reddi et al. 2021): Adagrad on the server over the mean update; step ``server_lr``."""
from flwr.serverapp.strategy import FedAdagrad

from strategies.registry import STRATEGIES


@STRATEGIES.register("fedadagrad")
def make(cfg, **sampling) -> FedAdagrad:
    return FedAdagrad(eta=float(cfg["server_lr"]), eta_l=float(cfg["lr"]), **sampling)
