"""Options of differential privacy (``strategies.dp``, Flower's wrappers): clipping, noise, the reported delta and
where the sample's randomness comes from."""
from fedfit.options.spec import Option

GROUP = "privacy: differential privacy (Flower's wrappers)"

OPTIONS = (
    Option("dp", "none",
           "none | server | client: Flower's fixed-clipping DP wrapper (clipping side)",
           choices=("none", "server", "client")),
    Option("dp_noise", 1.0,
           "noise multiplier z: Gaussian std = z * dp_clip / clients_per_round"),
    Option("dp_clip", 1.0,
           "L2 norm bound of one client's update (adaptive: the initial bound)"),
    Option("dp_clipping", "fixed",
           "fixed | adaptive: Flower's server-side adaptive clipping (follows the median norm)",
           choices=("fixed", "adaptive")),
    Option("dp_delta", 0.0,
           "delta of the reported (epsilon, delta); 0 = 1 / num_clients"),
    Option("dp_randomness", "secret",
           "secret | seeded (with dp): secret: each round's training clients, the DP noise and "
           "training faults from the OS's entropy, the trained clients written nowhere (not "
           "reproducible); seeded: from seed (reproducible; no amplified epsilon: the sample is "
           "public)", choices=("secret", "seeded")),
)
