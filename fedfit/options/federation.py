"""Options of the federation (``strategies``): rounds, clients sampled per round, the server's strategy and its
step."""
from fedfit.options.spec import Option

GROUP = "federation: rounds, sampling and the server's strategy"

OPTIONS = (
    Option("rounds", 10,
           "training rounds (round 0 evaluates the initial state only)", ge=0),
    Option("clients_per_round", 5,
           "training clients sampled per round (seeded by seed and round)"),
    Option("strategy", "fedavg",
           "fedavg | fedprox | fedadam | fedyogi | fedadagrad | fedavgm | fedmedian | fedtrimmedavg |"
           " krum | multikrum | bulyan (Flower's own classes)"),
    Option("server_lr", -1.0,
           "the server's step: fedavg / fedavgm: the global moves this many times the clients' mean "
           "update; fedadam / fedyogi / fedadagrad: eta. -1 = the strategy's own: fedavg: "
           "2 x clients_per_round up to 20, with the clients training at lr / 2 (the pace of lr with the "
           "updates added up, half the drift: docs/results/findings.md, \"The server step\"; 1 = McMahan et "
           "al.'s mean; 1 under dp); fedavgm: 1.0; the others: 0.01",
           gt=0, special=(-1,),
           hint="-1: the strategy's own: fedavg 2 x clients_per_round up to 20 (clients at lr / 2), fedavgm 1.0, "
                "fedadam / fedyogi / fedadagrad 0.01"),
    Option("server_momentum", 0.9,
           "fedavgm", ge=0, lt=1),
    Option("prox_mu", 0.01,
           "used by strategy = fedprox", ge=0),
    Option("trim_beta", 0.2,
           "fedtrimmedavg: fraction cut at each end, per coordinate", gt=0, lt=0.5),
    Option("malicious", 1,
           "krum / multikrum / bulyan: hostile clients per round they tolerate (f)", ge=0),
    Option("multikrum_keep", 0,
           "multikrum: updates averaged; 0 = clients_per_round - malicious", ge=0),
    Option("max_failures", 1.0,
           "the largest share of one exchange's clients whose messages may fail (errors, timeouts, absent "
           "nodes, rejected replies; not simulated faults) before the run stops with the first reason; 1.0: "
           "only when no client can work at all", ge=0, le=1),
    Option("max_reply_mb", 0.0,
           "the largest reply one client may send, in MB (10^6 bytes, as metered on the wire); a larger one is "
           "refused before it is decoded, counted and dropped; 0: no limit of the operator's (arrays larger "
           "than the model's layout are refused whatever this says)", ge=0, unit="MB"),
)
