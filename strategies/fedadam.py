"""FedAdam: Adam on the server over the averaged update (eta = ``server_lr``)."""
from flwr.serverapp.strategy import FedAdam as _FedAdam

from strategies.base import FedFiTMixin
from strategies.registry import STRATEGIES


class FedAdam(FedFiTMixin, _FedAdam):
    pass


@STRATEGIES.register("fedadam")
def make(cfg, **sampling):
    return FedAdam(eta=float(cfg["server_lr"]), eta_l=float(cfg["lr"]), tau=1e-6, **sampling)
