"""FedYogi (Reddi et al. 2021): Yogi on the server over the mean update; server step ``server_lr``."""
from flwr.serverapp.strategy import FedYogi

from strategies.registry import STRATEGIES


@STRATEGIES.register("fedyogi")
def make(cfg, **sampling) -> FedYogi:
    return FedYogi(eta=float(cfg["server_lr"]), eta_l=float(cfg["lr"]), **sampling)
