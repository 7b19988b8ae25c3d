"""Options of ``method = centralized`` (``fedfit.centralized``): the upper bound's steps and its tasks (budget-matched
or FiT's oracle)."""
from fedfit.options.spec import Option

GROUP = "bounds: method = centralized (FiT's upper bound)"

OPTIONS = (
    Option("central_steps", -1,
           "centralized: pooled episodic steps in all (spread over the rounds); -1 = the federation's"
           " total: rounds x clients_per_round x local_steps (fit: 400)",
           ge=0, special=(-1,), hint="-1: the federation's total steps"),
    Option("central_tasks", "pool",
           "centralized: pool: budget-matched, client-sized tasks drawn across the pool | client: one"
           " random client's classes and images per step (the federation's tasks, no averaging) | "
           "fit: FiT's oracle: trained once, its TaskResampler (5 up to all pooled classes, up to 200"
           " context images, split once), no weight decay, and each client scored with the pooled "
           "prototypes of its classes", choices=("pool", "client", "fit")),
)
