"""Experiment trackers (``tracker = tensorboard | mlflow | wandb``): every number of every round, the run's
resolved options as hyper-parameters, its figures as artifacts; local or offline unless told otherwise.

* ``tensorboard``: event files in ``RUN/tensorboard`` (``tensorboard --logdir runs``); options as a text
  summary, figures as images. Needs ``tensorboard`` (``pip install 'fedfit[tensorboard]'``).
* ``mlflow``: a run in ``$MLFLOW_TRACKING_URI``, default a local SQLite file ``OUT_DIR/mlflow.db``
  (``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``); the experiment is the run's group; a
  SQLite store's artifacts (the figures) go to ``mlartifacts/`` beside the database.
  Needs ``mlflow-skinny`` or ``mlflow`` (``pip install 'fedfit[mlflow]'``).
* ``wandb``: a Weights & Biases run, offline unless ``$WANDB_MODE`` says otherwise (``wandb sync`` uploads
  it later), files in ``RUN/wandb``, project ``$WANDB_PROJECT`` (default "fedfit"), group as the run's.
  Needs ``wandb`` (``pip install 'fedfit[wandb]'``).

A tracker's run id goes into the run's checkpoint, so ``--resume`` continues the same tracker run (and
TensorBoard drops what the interrupted attempt logged after the last complete round). A sweep gives
each of its runs the group ``SWEEP/GROUP`` (``tracker_group``). Round numbers are the step.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from fedfit.registry import Registry

TRACKERS: "Registry[Tracker]" = Registry("tracker")
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"),
            "wandb": ("wandb", "wandb")}  # tracker -> (module, extra)


class TrackerError(RuntimeError):
    """A tracker's package is missing (the message says what to install)."""


def check(name: str) -> None:
    """Raise TrackerError (one line) when tracker ``name`` cannot start on this machine."""
    if name == "none":
        return
    module, extra = PACKAGES[name]
    if importlib.util.find_spec(module) is None:
        raise TrackerError(f"tracker = {name} needs the {module} package: pip install 'fedfit[{extra}]' "
                           f"(or tracker = none)")


def round_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one round's record (``RoundRecord`` as a dict): every int / float field but the round
    itself, the adapters' own accuracies as ``acc_extra/<name>``, the count of failures; lists (sampled
    clients, per-client numbers) stay in rounds.jsonl."""
    out: dict[str, float] = {}
    for k, v in record.items():
        if k == "round" or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif isinstance(v, dict) and k in ("acc_extra", "new_acc_extra"):
            out.update({f"{k}/{n}": float(x) for n, x in v.items() if isinstance(x, (int, float))})
    out["failures"] = float(len(record.get("failures") or []))
    return out


def flat_options(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved options as scalar hyper-parameters (nested values as JSON text)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v, sort_keys=True, default=str)
            for k, v in sorted(config.items())}


class Tracker:
    """``start`` (returns the tracker's run id), ``log`` a round, ``artifact`` a file, ``finish``; a tracker's
    package loads only when it starts."""

    name = "none"

    def start(self, run_dir: Path, name: str, config: dict[str, Any], group: str, resume_id: str | None,
              first_step: int) -> str | None:
        raise NotImplementedError

    def log(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def artifact(self, path: Path) -> None:
        raise NotImplementedError

    def finish(self, failed: bool = False) -> None:
        """Close the tracker's run (``failed``: the federation stopped on an error)."""
        raise NotImplementedError


@TRACKERS.register("tensorboard")
class TensorBoard(Tracker):
    name = "tensorboard"

    def start(self, run_dir, name, config, group, resume_id, first_step):
        check(self.name)
        from torch.utils.tensorboard import SummaryWriter

        log_dir = Path(run_dir) / "tensorboard"
        # resuming: events the interrupted attempt wrote at or after the first round to redo are dropped
        self.writer = SummaryWriter(str(log_dir), purge_step=first_step if resume_id else None)
        if not resume_id:
            self.writer.add_text("options", "```\n" + json.dumps(flat_options(config), indent=1) + "\n```", 0)
            if group:
                self.writer.add_text("group", group, 0)
        return str(log_dir)

    def log(self, step, metrics):
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def artifact(self, path):
        if Path(path).suffix == ".png":
            import numpy as np
            from PIL import Image

            with Image.open(path) as img:
                self.writer.add_image(Path(path).stem, np.asarray(img.convert("RGB")), dataformats="HWC")

    def finish(self, failed=False):
        self.writer.close()


@TRACKERS.register("mlflow")
class MLflow(Tracker):
    name = "mlflow"

    def start(self, run_dir, name, config, group, resume_id, first_step):
        check(self.name)
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(run_dir).resolve().parent / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        if resume_id:
            self.run = mlflow.start_run(run_id=resume_id)
        else:
            experiment = group or "fedfit"
            if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(experiment) is None:
                # a local store keeps its artifacts beside its database, not in ./mlruns of whatever
                # folder the run was started from
                store = Path(uri[len("sqlite:///"):]).parent / "mlartifacts"
                mlflow.create_experiment(experiment, artifact_location=store.resolve().as_uri())
            mlflow.set_experiment(experiment)
            self.run = mlflow.start_run(run_name=name, tags={"fedfit.group": group, "fedfit.run_dir": str(run_dir)})
            options = flat_options(config)
            mlflow.log_params({k: str(v)[:6000] for k, v in options.items()})
        self.mlflow = mlflow
        return self.run.info.run_id

    def log(self, step, metrics):
        self.mlflow.log_metrics(metrics, step=step)

    def artifact(self, path):
        self.mlflow.log_artifact(str(path))

    def finish(self, failed=False):
        self.mlflow.end_run(status="FAILED" if failed else "FINISHED")


@TRACKERS.register("wandb")
class WandB(Tracker):
    name = "wandb"

    def start(self, run_dir, name, config, group, resume_id, first_step):
        check(self.name)
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fedfit"),
                              mode=os.environ.get("WANDB_MODE", "offline"), dir=str(run_dir), name=name,
                              group=group or None, config=flat_options(config), id=resume_id,
                              resume="allow" if resume_id else None, reinit="finish_previous")
        self.wandb = wandb
        return self.run.id

    def log(self, step, metrics):
        self.run.log(metrics, step=step)

    def artifact(self, path):
        if Path(path).suffix == ".png":
            self.run.log({Path(path).stem: self.wandb.Image(str(path))})

    def finish(self, failed=False):
        self.run.finish(exit_code=1 if failed else 0)


def create_tracker(name: str) -> Tracker:
    """Tracker ``name`` (``TRACKERS``); TrackerError when its package is missing."""
    check(name)
    return TRACKERS.create(name)
