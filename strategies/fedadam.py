"""FedAdam (Reddi et al. 2021): Adam on the server over the mean update; server step ``server_lr``."""
from flwr.serverapp.strategy import FedAdam

from strategies.registry import STRATEGIES


@STRATEGIES.register("fedadam")
def make(cfg, **sampling) -> FedAdam:
    return FedAdam(eta=float(cfg["server_lr"]), eta_l=float(cfg["lr"]), **sampling)
