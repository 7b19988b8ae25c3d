"""Flower server side: strategies over the packed adapter state, metering, the round loop, the ServerApp."""
from strategies import fedadam, fedavg, fedavgm, fedprox, fedyogi, local_only  # noqa: F401  (registers)
from strategies.registry import STRATEGIES


def create_strategy(cfg: dict, n: int):
    """The configured strategy (``local-only`` when ``method`` says so) for a state of ``n`` floats."""
    name = "local-only" if cfg["method"] == "local-only" else cfg["strategy"]
    k, N = cfg["clients_per_round"], cfg["num_clients"]
    e = cfg["eval_clients"] or N
    sampling = dict(fraction_train=k / N, min_train_nodes=k, fraction_evaluate=min(e, N) / N,
                    min_evaluate_nodes=min(e, N), min_available_nodes=N)
    s = STRATEGIES.create(name, cfg, **sampling)
    s.setup_fedfit(n, cfg["codec_down"], cfg["codec_up"], cfg["delta"])
    return s


__all__ = ["STRATEGIES", "create_strategy"]
