"""Options of a client's episodic fine-tuning (``fedfit.episodes``, ``fedfit.federated``): steps, tasks per
step, the learning rate and its schedule, weight decay, the ways of an episode."""
from fedfit.options.spec import Option

GROUP = "training: a client's episodic fine-tuning"

OPTIONS = (
    Option("local_steps", -1,
           "episodic steps per client per round; -1 = 10, or 400 for local-only (FiT's lower bound "
           "trains once, with FiT's fine-tuning budget)", ge=0, special=(-1,), hint="-1: 10, 400 for local-only"),
    Option("accumulate_tasks", 1,
           "tasks per Adam step: each step on the mean of this many tasks' gradients (UpperCaSE steps"
           " once per 16 tasks); local_steps / central_steps still count tasks (the compute and "
           "train_images do not change): 10 tasks with 16 = one step per round", ge=1, unit="tasks per Adam step"),
    Option("episode_split", "step",
           "context/target split of a client's support set: drawn afresh every step | round: once per"
           " client and round (FiT's code)", choices=("step", "round")),
    Option("lr", 0.0015,
           "Adam learning rate of the training (round 1; see lr_schedule): the bounds' and local-only's, and "
           "the clients' (halved under FedAvg's default server step, which moves 2 x clients_per_round times "
           "their mean update). FiT: 0.0035 fine-tuning, 0.003 / 0.006 federated", gt=0),
    Option("lr_schedule", "cosine",
           "cosine: lr down to ~0 by the last round along half a cosine | step: lr x lr_decay every "
           "lr_decay_every rounds (FiT: x 0.3 every 20 rounds on CIFAR-100)", choices=("step", "cosine")),
    Option("lr_decay", 1.0,
           "step: multiply lr by this every lr_decay_every rounds (1.0: constant)", gt=0),
    Option("lr_decay_every", 20,
           "step: rounds between two lr decays", ge=1, unit="rounds"),
    Option("weight_decay", 0.0,
           "Adam's L2 weight decay on the trained parameters (FiT: 0.001)", ge=0),
    Option("min_way", 5,
           "fewest classes of an episode (capped by the client's classes)", ge=1),
    Option("max_way", 0,
           "0 = all of a client's classes", ge=0, hint="0 = all classes"),
)
