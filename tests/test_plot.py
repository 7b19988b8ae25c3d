import csv

import matplotlib.image
import numpy as np
import pytest

from fedfit.plot import human_bytes, pareto_front, plot_runs
from fedfit.results import RoundRecord, RunWriter

FIGURES = ["accuracy_vs_round", "accuracy_vs_bytes", "pareto"]


def _fake_run(path, name, codec, bytes_per_round, final_acc, rounds=10, seed=0, evaluate_every=1, **extra):
    rng = np.random.default_rng(seed)
    config = {"name": name, "dataset": "cifar100", "shots": 5, "num_clients": 100, "clients_per_round": 10,
              "codec_up": codec, "strategy": "fedavg", **extra}
    w = RunWriter(path, config)
    cum_down = cum_up = 0
    for t in range(rounds + 1):
        down, up = (bytes_per_round, bytes_per_round // 4) if t else (0, 0)
        cum_down, cum_up = cum_down + down, cum_up + up
        acc = 0.2 + (final_acc - 0.2) * t / rounds + rng.normal(scale=0.005) * (t < rounds)
        evaluated = t % evaluate_every == 0 or t == rounds
        w.write(RoundRecord(
            round=t, clients=10 if t else 0, bytes_down_wire=down, bytes_up_wire=up,
            bytes_down_payload=int(down * 0.9), bytes_up_payload=int(up * 0.9),
            cum_bytes_down_wire=cum_down, cum_bytes_up_wire=cum_up, cum_bytes_wire=cum_down + cum_up,
            acc_mean=acc if evaluated else None, acc_median=acc + 0.01 if evaluated else None,
            acc_p10=acc - 0.1 if evaluated else None, acc_std=0.05 if evaluated else None,
            global_acc=acc - 0.05 if evaluated and "global" in name else None, eval_clients=20, seconds=1.5,
        ))
    return path


@pytest.fixture
def runs(tmp_path):
    return [
        _fake_run(tmp_path / "a", "fp32 + global", "fp32", 2_000_000, 0.62, seed=1),
        _fake_run(tmp_path / "b", "int8", "int8", 500_000, 0.61, seed=2, evaluate_every=3),
        _fake_run(tmp_path / "c", "topk 5%", "topk:0.05", 80_000, 0.50, seed=3),
        _fake_run(tmp_path / "d", "int8 (worse)", "int8", 600_000, 0.45, seed=4, shots=1),
    ]


def test_plot_runs_writes_figures_and_tables(runs, tmp_path):
    out = tmp_path / "plots"
    written = plot_runs(runs, out, title="smoke test")
    names = {p.name for p in written}
    assert names == {f"{f}.{e}" for f in FIGURES for e in ("png", "svg")} | {"runs.csv", "runs.md"}
    for f in FIGURES:
        png = out / f"{f}.png"
        assert png.stat().st_size > 5_000
        img = matplotlib.image.imread(png)
        assert img.ndim == 3 and img.shape[0] > 300 and img.std() > 0.01
        svg = (out / f"{f}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "</svg>" in svg and "cifar100" in svg

    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [r["name"] for r in rows] == ["fp32 + global", "int8", "topk 5%", "int8 (worse)"]
    assert [float(r["acc_mean"]) for r in rows] == pytest.approx([0.62, 0.61, 0.50, 0.45])
    assert rows[0]["global_acc"] and not rows[1]["global_acc"]
    assert rows[0]["rounds"] == "10" and rows[0]["codec_up"] == "fp32" and rows[3]["shots"] == "1"
    assert int(rows[0]["bytes_down_wire"]) == 20_000_000 and int(rows[0]["bytes_wire"]) == 25_000_000
    assert float(rows[0]["seconds"]) == pytest.approx(16.5)
    md = (out / "runs.md").read_text().splitlines()
    assert len(md) == 2 + len(runs) and "62.0%" in md[2] and "20 MB" in md[2]


def test_single_run_and_missing_config(tmp_path):
    run = tmp_path / "bare"
    w = RunWriter(run, {})
    for t in range(3):
        w.write(RoundRecord(round=t, cum_bytes_wire=1000 * t, acc_mean=None if t == 1 else 0.5 + t / 10))
    written = plot_runs([run], tmp_path / "out")
    assert all(p.exists() for p in written)
    rows = list(csv.DictReader((tmp_path / "out" / "runs.csv").open()))
    assert rows[0]["name"] == "bare" and float(rows[0]["acc_mean"]) == pytest.approx(0.7)


def test_empty_runs_raise(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="rounds.jsonl"):
        plot_runs([tmp_path / "empty"], tmp_path / "out")
    RunWriter(tmp_path / "no-rounds", {"name": "x"})
    with pytest.raises(ValueError, match="no round records"):
        plot_runs([tmp_path / "no-rounds"], tmp_path / "out")
    with pytest.raises(ValueError):
        plot_runs([], tmp_path / "out")


def test_helpers():
    assert human_bytes(999) == "999 B"
    assert human_bytes(1500) == "1.5 KB"
    assert human_bytes(2e9) == "2 GB"
    pts = [(10, 0.5), (5, 0.4), (20, 0.45), (30, 0.7), (5, 0.3)]
    assert pareto_front(pts) == [1, 0, 3]


def test_runs_differing_only_by_seed_are_drawn_as_their_mean(tmp_path):
    from fedfit.plot import load_runs, merge_seeds, seed_group

    assert seed_group("adapter=film_seed=2") == "adapter=film" and seed_group("seed=0_codec=int8") == "codec=int8"
    dirs = [_fake_run(tmp_path / f"s{s}", f"adapter=film_seed={s}", "fp32", 1000 * (s + 1), 0.5 + 0.1 * s, seed=s)
            for s in (0, 1)] + [_fake_run(tmp_path / "o", "adapter=case_seed=0", "fp32", 10, 0.4)]
    merged = merge_seeds(load_runs(dirs))
    assert [m.label for m in merged] == ["adapter=film (mean of 2 seeds)", "adapter=case_seed=0"]
    film, (a, b) = merged[0].run.rounds, (load_runs(dirs[:1])[0].run.rounds, load_runs(dirs[1:2])[0].run.rounds)
    assert film[-1].acc_mean == pytest.approx((a[-1].acc_mean + b[-1].acc_mean) / 2)
    assert film[-1].cum_bytes_wire == (a[-1].cum_bytes_wire + b[-1].cum_bytes_wire) // 2
    written = plot_runs(dirs, tmp_path / "out", merge_seeds=True)
    assert sum(1 for line in (tmp_path / "out" / "runs.csv").read_text().splitlines()) == 4  # tables: every run
    assert all(p.stat().st_size > 0 for p in written)


def test_accuracy_figures_draw_the_frozen_head_and_the_bounds_as_levels(tmp_path):
    """Runs that start from the same frozen head get its level; a caller's references (a sweep's bounds)
    replace it; runs that start apart get none."""
    same = [_fake_run(tmp_path / n, n, "fp32", 100_000, a, seed=0) for n, a in (("a", 0.6), ("b", 0.5))]
    plot_runs(same, tmp_path / "p1")
    level = f"frozen head (round 0): {100 * (0.2 + np.random.default_rng(0).normal(scale=0.005)):.1f}%"
    assert level in (tmp_path / "p1" / "accuracy_vs_round.svg").read_text()
    assert level in (tmp_path / "p1" / "accuracy_vs_bytes.svg").read_text()
    assert "frozen head" not in (tmp_path / "p1" / "pareto.svg").read_text()
    plot_runs(same, tmp_path / "p2", references={"lower bound": 0.3, "upper bound": 0.7})
    svg = (tmp_path / "p2" / "accuracy_vs_round.svg").read_text()
    assert "lower bound: 30.0%" in svg and "upper bound: 70.0%" in svg and "frozen head" not in svg
    apart = [*same, _fake_run(tmp_path / "c", "c", "fp32", 100_000, 0.5, seed=5)]  # another round-0 accuracy
    plot_runs(apart, tmp_path / "p3")
    assert "frozen head" not in (tmp_path / "p3" / "accuracy_vs_round.svg").read_text()
