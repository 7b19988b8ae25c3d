"""FedTrimmedAvg (Yin et al. 2018): per coordinate, drop the ``trim_beta`` fraction of lowest and of
highest values, average the rest (robust)."""
from flwr.serverapp.strategy import FedTrimmedAvg

from strategies.registry import STRATEGIES


@STRATEGIES.register("fedtrimmedavg")
def make(cfg, **sampling) -> FedTrimmedAvg:
    return FedTrimmedAvg(beta=float(cfg["trim_beta"]), **sampling)
