from pathlib import Path

import numpy as np
import pytest

from fedfit.config import ConfigError
from fedfit.results import RoundRecord, RunWriter
from fedfit.app.sweeps import aggregate, load_spec, load_sweep, markdown_table, replace_section, run_sweep


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
    assert "epsilon" not in markdown_table([row])  # no DP run: no epsilon columns
    dp_row = {**row, "eps": 11.06, "eps_sampled": 4.2}
    assert markdown_table([dp_row]).splitlines()[2].endswith("| 11.1 | 4.2 |")
    head = markdown_table([dp_row]).splitlines()[0]  # each epsilon's neighbour relation in its column's name
    assert head.endswith("| epsilon: add/remove one, no amplification | epsilon: replace one, k of n secret sample |")
    seeded = markdown_table([{**dp_row, "eps_sampled": None}]).splitlines()  # a seeded sample: no amplified column
    assert seeded[0].endswith("| epsilon: add/remove one, no amplification |") and seeded[2].endswith("| 11.1 |")


def test_a_finished_run_made_with_other_options_is_said_so_when_skipped(tmp_path):
    """A run whose options the experiment file no longer gives (edited, or a default changed) is not
    silently taken for the run the file describes: its skip line says which option differs."""
    f = _write(tmp_path, f'[base]\nout_dir = "{tmp_path}"\n[grid]\nmethod = ["fit"]\nseed = [0]\n')
    _, cfgs = load_sweep(f)
    run_sweep(cfgs, lambda c: _fake_run({**c, "lr": 0.003}, 0.6), progress=lambda s: None)
    lines = []
    run_sweep(cfgs, lambda c: None, progress=lines.append)
    assert lines == ["[1/1] method=fit_seed=0: done before, skipped - BUT was started with lr = 0.003, not 0.0015 "
                     f"as the sweep now says: its results are the old ones (move {cfgs[0]['out_dir']}/method=fit_seed=0 away to "
                     "run it again)"]
    _fake_run(cfgs[0], 0.6)  # made with the sweep's own options: skipped without a word more
    lines.clear()
    run_sweep(cfgs, lambda c: None, progress=lines.append)
    assert lines == ["[1/1] method=fit_seed=0: done before, skipped"]


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


def test_bounds_table_pairs_every_group_with_the_bounds_seed_by_seed(tmp_path):
    from fedfit.app.sweeps import bounds_table

    f = _write(tmp_path, f'[base]\nout_dir = "{tmp_path}"\n[grid]\nseed = [0, 1]\n'
                         '[[run]]\nname = "fit"\n[[run]]\nmethod = "local-only"\n[[run]]\nmethod = "centralized"\n'
                         '[bounds]\nlower = "method=local-only"\nupper = "method=centralized"\n')
    _, cfgs = load_sweep(f)
    assert sorted(c["name"] for c in cfgs) == ["fit_seed=0", "fit_seed=1", "method=centralized_seed=0",
                                               "method=centralized_seed=1", "method=local-only_seed=0",
                                               "method=local-only_seed=1"]  # the grid of seeds: no runs of its own
    acc = {("fit", 0): 0.70, ("fit", 1): 0.74, ("method=local-only", 0): 0.60, ("method=local-only", 1): 0.70,
           ("method=centralized", 0): 0.80, ("method=centralized", 1): 0.78}
    for c in cfgs:
        _fake_run(c, acc[(c["name"].rsplit("_seed=", 1)[0], c["seed"])])
    table = bounds_table([Path(c["out_dir"]) / c["name"] for c in cfgs],
                         {"lower": "method=local-only", "upper": "method=centralized"})
    fit = next(line for line in table.splitlines() if line.startswith("| fit |"))
    # +10 and +4 over the lower bound, -10 and -4 under the upper; gaps 20 and 8: (10 + 4) / (20 + 8) = 50%
    assert "| 72.0 ± 2.0 | method=local-only / method=centralized | +7.0 ± 3.0 | -7.0 ± 3.0 | 50% |" in fit
    assert "per seed: +20.0 / +8.0 points (upper >= lower holds on every seed)" in table
    with pytest.raises(ConfigError, match=r"\[bounds\] needs lower"):
        load_sweep(_write(tmp_path, "[bounds]\nlower = 'x'\n"))
    with pytest.raises(ConfigError, match=r"\[bounds.groups\] fit needs lower"):
        load_sweep(_write(tmp_path, "[bounds]\nlower = 'x'\nupper = 'y'\n[bounds.groups]\nfit = { lower = 'x' }\n"))


def test_each_group_is_placed_between_its_own_bounds_and_a_second_upper_bound(tmp_path):
    """``[bounds.groups]``: a variant compared with the bounds run with its own switches; ``oracle``: a second
    upper bound (FiT's oracle) with its own column and gap."""
    from fedfit.app.sweeps import bounds_table

    f = _write(tmp_path, f'[base]\nout_dir = "{tmp_path}"\n[grid]\nseed = [0, 1]\n'
                         + "".join(f'[[run]]\nname = "{n}"\n' for n in ("a", "lo", "up", "or", "b", "lo-b", "up-b"))
                         + '[bounds]\nlower = "lo"\nupper = "up"\noracle = "or"\n'
                           '[bounds.groups]\nb = { lower = "lo-b", upper = "up-b" }\n')
    _, cfgs = load_sweep(f)
    acc = {"a": 0.7, "lo": 0.6, "up": 0.8, "or": 0.9, "b": 0.5, "lo-b": 0.4, "up-b": 0.6}
    for c in cfgs:
        _fake_run(c, acc[c["name"].rsplit("_seed=", 1)[0]])
    table = bounds_table([Path(c["out_dir"]) / c["name"] for c in cfgs], load_spec(f)["bounds"])
    row = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert "| lo / up | +10.0 ± 0.0 | -10.0 ± 0.0 | 50% | -20.0 ± 0.0 | 33% |" in row["a"]
    assert "| lo-b / up-b | +10.0 ± 0.0 | -10.0 ± 0.0 | 50% | n/a | n/a |" in row["b"]  # its own bounds, no oracle
    assert "| own | +30.0 ± 0.0 | +10.0 ± 0.0 | 150% | - | - |" in row["or"]
    assert "or minus lo, per seed: +30.0 / +30.0 points" in table and "up-b minus lo-b, per seed: +20.0" in table
    shared = {"lower": "lo-b", "upper": "up-b"}  # two groups with the same bounds: their gaps listed once
    table = bounds_table([Path(c["out_dir"]) / c["name"] for c in cfgs],
                         {**load_spec(f)["bounds"], "groups": {"b": shared, "lo-b": shared}})
    assert table.count("up-b minus lo-b, per seed") == 1


def test_a_bounds_table_before_its_bounds_finished_says_which_are_missing(tmp_path):
    from fedfit.app.sweeps import bounds_table

    f = _write(tmp_path, f'[base]\nout_dir = "{tmp_path}"\n[grid]\nseed = [0, 1]\n'
                         + "".join(f'[[run]]\nname = "{n}"\n' for n in ("a", "lo", "up"))
                         + '[bounds]\nlower = "lo"\nupper = "up"\n')
    _, cfgs = load_sweep(f)
    for c in cfgs:
        if not c["name"].startswith("lo"):  # the lower bound has not finished
            _fake_run(c, {"a": 0.7, "up": 0.8}[c["name"].rsplit("_seed=", 1)[0]])
    table = bounds_table([Path(c["out_dir"]) / c["name"] for c in cfgs if not c["name"].startswith("lo")],
                         load_spec(f)["bounds"])
    row = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert "| lo / up | n/a | -10.0 ± 0.0 | n/a |" in row["a"]
    assert "Bounds not finished yet: lo (n/a where they are needed; run the sweep again)." in table
    assert "minus lo" not in table


def test_stability_table_flags_a_last_round_below_round_0_or_the_best(tmp_path):
    from fedfit.paired import encode_answers
    from fedfit.app.sweeps import stability_table

    ids = np.arange(100, 300)

    def clients(*accs):  # per training client (ids 0, 1, ...); id 9 is a new user (never in the paired change)
        return {**{str(i): {"accuracy": a} for i, a in enumerate(accs)}, "9": {"accuracy": 0.0}}

    def answers(right):  # the global head's answers on 200 images: the first `right` are right
        return encode_answers(ids, np.arange(ids.size) < right)

    runs = {  # name: [(per-client accuracies, global images right)] per round
        "steady": [((0.6, 0.6), 100), ((0.7, 0.7), 120), ((0.7, 0.69), 119)],
        "noisy": [((0.6, 0.6), 100), ((0.7, 0.3), 100), ((0.9, 0.28), 98)],     # -1 +- 31 points; 2 of 200 images
        "worse": [((0.6, 0.6), 100), ((0.7, 0.7), 140), ((0.58, 0.58), 60)],  # every client and 40 images down
        "dip": [((0.6, 0.6), 100), ((0.7, 0.7), 140), ((0.68, 0.68), 136)],   # 2 points under the best round
    }
    dirs = []
    for name, rounds in runs.items():
        w = RunWriter(tmp_path / name, {"name": name, "seed": 0, "num_clients": 2})
        for r, (accs, right) in enumerate(rounds):
            w.write(RoundRecord(round=r, acc_mean=float(np.mean(accs)), per_client=clients(*accs),
                                global_acc=right / ids.size, global_answers=answers(right)))
        w.finish()
        dirs.append(tmp_path / name)
    lines = stability_table(dirs).splitlines()
    assert lines[2] == ("| steady | 60.0 / 70.0 (1) / 69.5 | +9.50 +- 0.50 (2 clients) | yes "
                        "| 50.0 / 60.0 (1) / 59.5 | +9.50 +- 2.08 (200 images) | yes |")
    assert lines[3] == ("| noisy | 60.0 / 60.0 (0) / 59.0 | -1.00 +- 31.00 (2 clients) | noise "
                        "| 50.0 / 50.0 (0) / 49.0 | -1.00 +- 0.71 (200 images) | noise |")
    assert "| worse | 60.0 / 70.0 (1) / 58.0 | -2.00 +- 0.00 (2 clients) | **NO** |" in lines[4]
    assert "| 50.0 / 70.0 (1) / 30.0 | -20.00 +- 2.84 (200 images) | **NO** |" in lines[4]
    assert "| dip | 60.0 / 70.0 (1) / 68.0 | +8.00 +- 0.00 (2 clients) | **NO** |" in lines[5]  # up, but off its best
    assert len(lines) == 6  # no group of several seeds: no pooled row

    for seed, (accs, right) in enumerate([((0.6, 0.7), 101), ((0.7, 0.9), 98)]):  # seeds of one group: pooled
        w = RunWriter(tmp_path / f"g_seed={seed}", {"name": f"g_seed={seed}", "seed": seed, "num_clients": 2})
        for r, (a, k) in enumerate([((0.6, 0.6), 100), (accs, right)]):
            w.write(RoundRecord(round=r, acc_mean=float(np.mean(a)), per_client=clients(*a),
                                global_acc=k / ids.size, global_answers=answers(k)))
        w.finish()
    pooled = stability_table([tmp_path / "g_seed=0", tmp_path / "g_seed=1"]).splitlines()[-1]
    # clients: 0, +10, +10, +30 -> +12.5 +- 6.29; images: +1 of 200 and -2 of 200 -> -0.25 +- 0.43 over 400
    assert pooled == ("| g: 2 seeds pooled | 60.0 / - / 72.5 | +12.50 +- 6.29 (4 clients) | yes "
                      "| 50.0 / - / 49.8 | -0.25 +- 0.43 (400 images) | noise |")


def test_target_table_times_each_group_to_its_first_round_at_the_target(tmp_path):
    from fedfit.app.sweeps import target_table

    runs = {"fast_seed=0": [0.6, 0.76, 0.8], "fast_seed=1": [0.6, 0.7, 0.75], "slow_seed=0": [0.6, 0.7, 0.72]}
    dirs = []
    for name, accs in runs.items():
        w = RunWriter(tmp_path / name, {"name": name, "seed": int(name[-1])})
        for r, a in enumerate(accs):
            w.write(RoundRecord(round=r, acc_mean=a, cum_bytes_wire=1000 * r, sim_total_s=10.0 * r))
        w.finish()
        dirs.append(tmp_path / name)
    lines = target_table(dirs, 0.75).splitlines()
    # fast: seed 0 at round 1 (10 s, 1 kB), seed 1 at round 2 (20 s, 2 kB): mean +- std over the two
    assert "| fast | 2 of 2 | 15.0 ± 5.0 | 1.5 KB ± 500 B | 1.5 ± 0.5 | 77.5 ± 2.5 | 20.0 ± 0.0 | 2 KB |" in lines
    assert "| slow | 0 of 1 | not reached | not reached | not reached | 72.0 | 20.0 | 2 KB |" in lines
    with pytest.raises(ConfigError, match="target is an accuracy"):
        load_sweep(_write(tmp_path, "target = 75\n"))


def test_python_api_sweep_and_load_run(tmp_path):
    import fedfit

    f = _write(tmp_path, f'[base]\nout_dir = "{tmp_path}"\n[grid]\nseed = [0, 1]\n')
    _, cfgs = load_sweep(f)
    for c in cfgs:
        _fake_run(c, 0.6 + 0.1 * c["seed"])
    result = fedfit.sweep(f, plot_only=True)
    assert result.name == "exp" and [r.name for r in result.runs] == ["seed=0", "seed=1"] and result.failed == []
    assert [r.last.acc_mean for r in result.runs] == pytest.approx([0.6, 0.7])
    assert "| run | 2 |" in result.table and any(p.name == "accuracy_vs_bytes.png" for p in result.figures)
    assert fedfit.load_run(result.runs[1].dir).last.acc_mean == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="unknown option"):
        fedfit.sweep(f, "roundz=3")


def test_only_runs_the_runs_it_names_and_tables_every_finished_one(tmp_path, monkeypatch):
    """``fedfit sweep FILE --only 'b*'``: the matching runs only; a pattern that matches nothing stops in one line."""
    from fedfit.app import api

    f = _write(tmp_path, f'[base]\nout_dir = "{tmp_path}"\n[grid]\nseed = [0]\n[[run]]\nname = "a"\n[[run]]\nname = "b"\n')
    ran = []
    monkeypatch.setattr("strategies.simulate.simulate", lambda cfg, **kw: (ran.append(cfg["name"]), _fake_run(cfg, 0.5)))
    api.sweep(f, only=["b*"], progress=lambda s: None)
    assert ran == ["b_seed=0"]
    with pytest.raises(ConfigError, match="no run matches --only z"):
        api.sweep(f, only=["z"], progress=lambda s: None)


def test_dry_run_lists_only_the_runs_only_chooses(tmp_path, capsys):
    from fedfit.app import cli

    f = _write(tmp_path, f'[base]\nout_dir = "{tmp_path}"\n[grid]\nseed = [0, 1]\n[[run]]\nname = "a"\n[[run]]\nname = "b"\n')
    assert cli.main(["sweep", str(f), "--dry-run", "--only", "b_seed=1", "--only", "a*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"sweep exp: 3 of 4 runs -> {tmp_path / 'exp'}" and [o.strip() for o in out[1:]] == ["a_seed=0", "a_seed=1",
                                                                                             "b_seed=1"]
    assert not (tmp_path / "exp").exists()  # nothing ran
