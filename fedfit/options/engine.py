"""Options of the engine (``strategies.simulate``): where clients run, their CPUs and GPUs, the device, the
precision and how long the server waits."""
from fedfit.options.spec import Option

GROUP = "engine: where and how clients run"

OPTIONS = (
    Option("engine", "ray",
           "ray: a pool of Ray actors, each serving many clients in turn (fedfit's) | flower: "
           "Flower's simulation engine (as flwr run) | inline: every client in this process, one "
           "after another (no Ray: quick runs, debugging)", choices=("ray", "flower", "inline")),
    Option("overlap_eval", True,
           "send round r's evaluation together with round r+1's training (both start from round r's "
           "state): actors the few training clients leave idle evaluate meanwhile; same results, less"
           " time (off for the bounds and adapters with personal state)"),
    Option("num_cpus", 1,
           "Ray CPUs per client", gt=0),
    Option("num_gpus", 0.0,
           "Ray GPUs per client (fractional OK); >0 needs CUDA", ge=0),
    Option("ray_address", "",
           "\"\" = start a local Ray; \"auto\" or host:port = join a cluster"),
    Option("device", "auto",
           "auto | cpu | cuda | cuda:N"),
    Option("precision", "auto",
           "auto: the frozen backbone under bf16 autocast on CUDA, exact fp32 on CPU | fp32",
           choices=("auto", "fp32")),
    Option("timeout_s", 3600,
           "seconds: per exchange, for client replies; also bounds waits for nodes", gt=0, unit="seconds"),
)
