"""Bulyan (El Mhamdi et al. 2018): MultiKrum selection, then a trimmed mean around the median,
tolerating f = ``malicious`` hostile clients per round (needs clients_per_round >= 4f + 3)."""
from flwr.serverapp.strategy import Bulyan

from strategies.registry import STRATEGIES


@STRATEGIES.register("bulyan")
def make(cfg, **sampling) -> Bulyan:
    return Bulyan(num_malicious_nodes=int(cfg["malicious"]), **sampling)
