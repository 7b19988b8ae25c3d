"""Options of ``adapter = iciia`` (``fedfit.adapters.iciia``): the unlabelled history it attends over and its
block-diagonal projections."""
from fedfit.options.spec import Option

GROUP = "adapter: iciia (attention over a client's own history)"

OPTIONS = (
    Option("history", -1,
           "unlabelled history images per class per client (ICIIA attends over them); -1 = 5 with "
           "adapter = iciia, else 0",
           ge=0, special=(-1,), hint="-1: 5 with adapter = iciia", unit="images per class"),
    Option("iciia_partitions", 256,
           "ICIIA: P, block-diagonal partitions of its projections (1 = ICIIA-B)", ge=1),
)
