"""Options of the output (``fedfit.results``, ``fedfit.trackers``): where run folders go and which tracker gets
every round."""
from fedfit.options.spec import Option

GROUP = "output: run folders and trackers"

OPTIONS = (
    Option("out_dir", "runs",
           "run folders go to out_dir/name (a sweep: out_dir/SWEEP/RUN)"),
    Option("tracker", "none",
           "none | tensorboard | mlflow | wandb: every round's numbers, the options and the figures "
           "(local / offline; see fedfit/trackers.py), continued by --resume",
           choices=("none", "tensorboard", "mlflow", "wandb")),
    Option("tracker_group", "",
           "the tracker's group / experiment (\"\": none; a sweep sets SWEEP/GROUP)"),
    Option("resume", False,
           "continue the run folder (out_dir/name) after its last checkpointed round, with the options it "
           "was started with (a different one is refused, but for where and how its clients run and its "
           "output): how a deployed run (flwr run) goes on after its SuperLink restarts; fedfit simulate: "
           "--resume RUN_DIR"),
)
