"""FedMedian (Yin et al. 2018): the coordinate-wise median of the clients' states (robust)."""
from flwr.serverapp.strategy import FedMedian

from strategies.registry import STRATEGIES


@STRATEGIES.register("fedmedian")
def make(cfg, **sampling) -> FedMedian:
    return FedMedian(**sampling)
