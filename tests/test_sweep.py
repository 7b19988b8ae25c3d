from pathlib import Path

import pytest

from fedfit.config import ConfigError
from fedfit.results import RoundRecord, RunWriter
from fedfit.sweep import aggregate, load_sweep, markdown_table, replace_section, run_sweep


def _write(tmp_path, text):
    f = tmp_path / "exp.toml"
    f.write_text(text)
    return f


def test_grid_and_extra_runs_expand_and_validate(tmp_path):
    f = _write(tmp_path, f'[base]\nrounds = 2\nout_dir = "{tmp_path}"\n[grid]\nmethod = ["fit", "head-only"]\n'
                         'seed = [0, 1]\n[[run]]\nmethod = "full"\n')
    name, cfgs = load_sweep(f, ["shots=10"])
    assert name == "exp" and len(cfgs) == 6
    assert {c["name"] for c in cfgs} >= {"method=fit_seed=0", "method=full_seed=1"}
    assert all(c["rounds"] == 2 and c["shots"] == 10 and c["out_dir"] == str(tmp_path / "exp") for c in cfgs)


@pytest.mark.parametrize("text, match", [
    ("[grid]\nmethod = []\n", "non-empty list"),
    ("[grid]\nmethod = ['magic']\n", "method = .magic. is unknown"),
    ("[base]\nroundz = 1\n", "unknown option"),
    ("[bsae]\n", "unknown sections"),
])
def test_bad_experiment_files(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_sweep(_write(tmp_path, text))


def _fake_run(cfg, acc):
    w = RunWriter(f"{cfg['out_dir']}/{cfg['name']}", cfg)
    w.write(RoundRecord(round=0, acc_mean=0.5))
    w.write(RoundRecord(round=1, clients=2, bytes_up_wire=200, bytes_down_wire=100, cum_bytes_wire=300, acc_mean=acc,
                        seconds=2.0 + cfg["seed"]))
    w.finish(shared_parameters=20544, personal_parameters=0)


def test_sweep_resumes_and_aggregates_over_seeds(tmp_path):
    f = _write(tmp_path, f'[base]\nout_dir = "{tmp_path}"\n[grid]\nmethod = ["fit"]\nseed = [0, 1, 2]\n')
    _, cfgs = load_sweep(f)
    ran = []
    run_sweep(cfgs[:1], lambda c: (ran.append(c["name"]), _fake_run(c, 0.6)))
    failed = run_sweep(cfgs, lambda c: (ran.append(c["name"]), _fake_run(c, 0.6 + 0.1 * c["seed"])),
                       progress=lambda s: None)
    assert ran == ["method=fit_seed=0", "method=fit_seed=1", "method=fit_seed=2"] and failed == []  # seed 0 not redone
    (row,) = aggregate([Path(c["out_dir"]) / c["name"] for c in cfgs])
    assert row["seeds"] == 3 and row["group"] == "method=fit"
    assert row["acc"] == pytest.approx(0.7) and row["up_per_client_round"] == 100
    assert row["s_per_round"] == pytest.approx(3.0) and row["shared"] == 20544
    assert "| method=fit | 3 | 20,544 | 0 |" in markdown_table([row]) and "| 3.0 |" in markdown_table([row])


def test_a_failed_run_is_reported_and_the_sweep_goes_on(tmp_path):
    f = _write(tmp_path, f'[base]\nout_dir = "{tmp_path}"\n[grid]\nseed = [0, 1, 2]\n')
    _, cfgs = load_sweep(f)
    lines = []

    def run(c):
        if c["seed"] == 1:
            raise RuntimeError("Ray could not start on this machine: timed out")
        _fake_run(c, 0.5)

    assert run_sweep(cfgs, run, progress=lines.append) == ["seed=1"]
    assert "[2/3] seed=1: FAILED: RuntimeError: Ray could not start" in lines[2]
    assert (Path(cfgs[2]["out_dir"]) / "seed=2" / "summary.json").is_file()


def test_replace_section():
    text = "a\n<!-- results:x:start -->\nold\n<!-- results:x:end -->\nb"
    assert replace_section(text, "results:x", "new") == "a\n<!-- results:x:start -->\nnew\n<!-- results:x:end -->\nb"
    with pytest.raises(ValueError):
        replace_section("no markers", "results:x", "new")
