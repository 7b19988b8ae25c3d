"""Options of simulated faults and attacks (``fedfit.faults``): dropout, stragglers, replayed failures and hostile
clients."""
from fedfit.options.spec import Option

GROUP = "faults and attacks (simulated; every choice seeded by seed, round and partition id)"

OPTIONS = (
    Option("dropout", 0.0,
           "probability per client-round that a sampled client fails before training", ge=0, le=1),
    Option("straggler", 0.0,
           "probability per client-round that a client is slow...", ge=0, le=1),
    Option("straggler_delay_s", 0.0,
           "...by this many seconds (past timeout_s: a timeout)", ge=0, unit="seconds"),
    Option("replay_failures", "",
           "a run folder: every client that failed in a round of that run (training or evaluation, any reason) "
           "fails in the same round and phase here (injected) - a deployment's failures, simulated. Read by the "
           "clients: simulation engines only"),
    Option("poison_fraction", 0.0,
           "fraction of the training clients that are hostile (the same ones all run)", ge=0, le=1),
    Option("poison", "scale",
           "what a hostile client sends instead of its update (fedfit.faults)",
           choices=("scale", "signflip", "noise", "nan")),
    Option("poison_scale", 100.0,
           "scale: update x this; noise: Gaussian of this x the update's std", gt=0),
)
