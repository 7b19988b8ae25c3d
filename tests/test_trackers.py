"""Experiment trackers: every round's numbers land in TensorBoard, MLflow or W&B (offline), and a resumed
run continues the same tracker run."""
import json

import pytest

from fedfit.config import load_config
from fedfit.results import read_rounds
from fedfit.trackers import round_metrics
from tests.tiny import TINY

BASE = {**TINY, "num_clients": 2, "clients_per_round": 1, "rounds": 2, "queries": 2,
        "new_users": 0, "local_steps": 2, "engine": "inline"}


class _Crash(Exception):
    pass


class _CrashAfter:
    """A callback that stops the run after round ``r`` (its checkpoint written), as a kill would."""

    def __init__(self, r):
        self.r = r

    def wrap_grid(self, grid):
        return grid

    def on_run_start(self, fed, resumed_after):
        pass

    def on_round_end(self, fed, record):
        if record.round == self.r:
            raise _Crash()

    def on_run_end(self, fed, summary):
        pass


def _run_crash_then_resume(tmp_path, tracker, monkeypatch):
    from strategies.simulate import simulate

    cfg = load_config(overrides={**BASE, "tracker": tracker, "out_dir": str(tmp_path), "name": tracker,
                                 "tracker_group": "tests/trackers"})
    with pytest.raises(_Crash):
        simulate(cfg, callbacks=(_CrashAfter(1),))
    simulate(cfg, resume=True)
    return tmp_path / tracker, read_rounds(tmp_path / tracker)


def test_round_metrics_are_every_number_of_a_record():
    m = round_metrics({"round": 3, "acc_mean": 0.5, "global_acc": None, "clients": 2, "acc_extra": {"accuracy_linear": 0.4},
                       "failures": [{"kind": "error"}], "per_client": {"0": {"accuracy": 1.0}}, "trained": [0]})
    assert m == {"acc_mean": 0.5, "clients": 2.0, "acc_extra/accuracy_linear": 0.4, "failures": 1.0}


@pytest.mark.slow
def test_tensorboard_gets_every_round_and_a_resume_continues_it(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, rounds = _run_crash_then_resume(tmp_path, "tensorboard", monkeypatch)
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    steps = [(e.step, round(e.value, 6)) for e in acc.Scalars("acc_mean")]
    assert steps == [(r["round"], round(r["acc_mean"], 6)) for r in rounds]  # each round once, in order
    assert "accuracy_vs_round" in acc.Tags()["images"]


@pytest.mark.slow
def test_mlflow_gets_options_every_round_and_figures_and_a_resume_continues_the_same_run(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run, rounds = _run_crash_then_resume(tmp_path, "mlflow", monkeypatch)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "tests/trackers"]
    (r,) = client.search_runs([exp.experiment_id])  # one run, continued by --resume
    history = sorted((m.step, round(m.value, 6)) for m in client.get_metric_history(r.info.run_id, "acc_mean"))
    assert history == [(x["round"], round(x["acc_mean"], 6)) for x in rounds]
    assert r.data.params["rounds"] == "2" and r.data.params["dataset"] == "digits"
    assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"accuracy_vs_round.png"}
    assert list((tmp_path / "mlartifacts").rglob("accuracy_vs_round.png"))  # beside the database, not ./mlruns
    ck = json.loads((run / "config.json").read_text())
    assert ck["tracker"] == "mlflow"


@pytest.mark.slow
def test_wandb_offline_run_is_continued_by_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run, rounds = _run_crash_then_resume(tmp_path, "wandb", monkeypatch)
    offline = sorted((run / "wandb").rglob("offline-run-*"))
    assert len(offline) == 2 and len({p.name.rsplit("-", 1)[-1] for p in offline}) == 1  # one run id, both attempts
    logged = [b"".join(f.read_bytes() for f in p.glob("run-*.wandb")) for p in offline]
    for attempt, rs in zip(logged, (rounds[:2], rounds[2:])):  # rounds 0-1 before the crash, 2 after it
        for r in rs:  # each round's acc_mean as the JSON text W&B stores beside its key
            assert b"acc_mean" in attempt and json.dumps(r["acc_mean"]).encode() in attempt


def test_a_missing_tracker_package_is_one_line_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    from fedfit.config import ConfigError
    from strategies.simulate import preflight

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    cfg = load_config(overrides={**BASE, "tracker": "mlflow", "out_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"tracker = mlflow needs the mlflow package: pip install 'fedfit\[mlflow\]'"):
        preflight(cfg)
