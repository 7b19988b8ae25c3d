"""experiments/round0_requery.py: re-scoring a finished run reproduces its own numbers, then scores more images."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fedfit.app import cli
from fedfit.results import read_rounds

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("round0_requery", REPO / "experiments" / "round0_requery.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_requery_reproduces_the_runs_own_change_and_scores_every_never_trained_image(tmp_path):
    args = ["dataset=digits", "image_size=32", "engine=inline", "num_clients=4", "clients_per_round=2", "rounds=2",
            "local_steps=5", "lr=0.01", "queries=3", "new_users=1", "global_eval=false", f"out_dir={tmp_path}", "name=r"]
    assert cli.main(["simulate", *args]) == 0
    run = tmp_path / "r"
    own, more, per_client = _script().requery(run)
    rows = read_rounds(run)
    stored = [100 * (rows[-1]["per_client"][str(p)]["accuracy"] - rows[0]["per_client"][str(p)]["accuracy"])
              for p in range(4)]
    np.testing.assert_allclose(own, stored, atol=1e-4)  # the run's own queries: its own numbers
    assert per_client > 10 * 5 * 3  # every image of its classes no training client trained on, not 15
    assert np.isfinite(more).all() and more.shape == (4,)


def test_folders_that_are_not_finished_runs_are_named_and_skipped(tmp_path, capsys):
    """``runs/SWEEP/*`` also matches the sweep's plots/ folder: skipped with one line, not a traceback."""
    finished_runs = _script().finished_runs
    run, plots = tmp_path / "seed=0", tmp_path / "plots"
    run.mkdir(), plots.mkdir()
    (run / "config.json").write_text("{}")
    (run / "final_state.npz").write_bytes(b"")
    assert finished_runs([str(run), str(plots)]) == [run]
    assert capsys.readouterr().err == f"{plots}: not a finished run (no config.json and final_state.npz), skipped\n"
    with pytest.raises(SystemExit, match="no finished run"):
        finished_runs([str(plots)])
