"""Options of what to run: the method, the run's name and its seed (the method's own options live in its group)."""
from fedfit.options.spec import Option

GROUP = "what to run"

OPTIONS = (
    Option("name", "",
           "run name; \"\" = <method>-<dataset>-<shots>shot-s<seed>"),
    Option("method", "fit",
           "what is trained, and where:"
           "\nfit: the adapter, federated (aggregated by the strategy)"
           "\nhead-only: nothing in the body (the frozen backbone's head)"
           "\nlocal-only: FiT's lower bound: every training client fine-tunes alone, once, local_steps "
           "steps (-1: FiT's 400); nothing aggregated, nothing sent"
           "\ncentralized: FiT's upper bound: the adapter trained on the pooled support sets of all "
           "training clients (central_steps); \"bytes\" = uploading them"
           "\nfull: every backbone weight, federated (the BiT-style baseline)"),
    Option("seed", 0,
           "client sampling and training", ge=0),
)
