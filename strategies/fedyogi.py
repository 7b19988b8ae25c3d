"""FedYogi: Yogi on the server over the averaged update (eta = ``server_lr``)."""
from flwr.serverapp.strategy import FedYogi as _FedYogi

from strategies.base import FedFiTMixin
from strategies.registry import STRATEGIES


class FedYogi(FedFiTMixin, _FedYogi):
    pass


@STRATEGIES.register("fedyogi")
def make(cfg, **sampling):
    return FedYogi(eta=float(cfg["server_lr"]), eta_l=float(cfg["lr"]), tau=1e-6, **sampling)
