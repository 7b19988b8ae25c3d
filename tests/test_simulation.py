"""End to end on Ray, digits at 32 px, a few clients: fedfit's actor pool (``engine = "ray"``) and
Flower's own simulation engine (``engine = "flower"``) give the same results.

One test starts and stops its own Ray (nothing may be left running); the others join one shared
Ray head (``ray_head`` in conftest: ``ray_address``, the path a multi-machine cluster takes).
"""
import json
import os

import numpy as np
import pytest

from fedfit.config import load_config
from fedfit.paired import decode_answers
from tests import procs
from tests.runs import rounds as _rounds
from tests.runs import timeless
from tests.tiny import TINY

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find Ray processes")

BASE = {**TINY, "num_clients": 4, "clients_per_round": 2, "rounds": 2,
        "local_steps": 3, "queries": 5, "new_users": 0}






def test_four_clients_two_rounds_on_its_own_ray(tmp_path):
    from strategies.simulate import simulate

    before = procs.ray_pids()
    cfg = load_config(overrides={**BASE, "out_dir": str(tmp_path), "name": "sim"})
    summary = simulate(cfg)
    run = tmp_path / "sim"
    rounds = _rounds(run)
    n = json.loads((run / "config.json").read_text())["state_size"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["bytes_up_wire"] == 0 and rounds[0]["eval_clients"] == 4
    assert rounds[0]["setup_bytes_wire"] == 0  # fedfit's engine placed the partitions: no hello exchange
    for r in rounds[1:]:
        assert r["clients"] == 2 and r["failed"] == 0 and len(r["trained"]) == 2
        # two clients, one packed fp32 state each way: payload exact, framing <= 5%
        assert r["bytes_up_payload"] == r["bytes_down_payload"] == 2 * 4 * n
        assert r["bytes_up_payload"] < r["bytes_up_wire"] <= 1.05 * r["bytes_up_payload"]
        assert 0.0 <= r["acc_mean"] <= 1.0 and r["train_loss"] > 0 and r["global_acc"] is not None
        ids, right = decode_answers(r["global_answers"])  # the global head's answers, image by image
        assert len(ids) == len(set(ids)) == r["global_queries"] and right.mean() == pytest.approx(r["global_acc"])
        assert np.array_equal(ids, decode_answers(rounds[0]["global_answers"])[0])  # the same images every round
        assert set(r["per_client"]) == {"0", "1", "2", "3"}  # evaluated clients, by partition id
        assert all("up_wire" in r["per_client"][str(p)] for p in r["trained"])
    assert rounds[2]["cum_bytes_wire"] == sum(r["bytes_up_wire"] + r["bytes_down_wire"] for r in rounds)
    state = np.load(run / "final_state.npz")
    assert sum(v.size for v in state.values()) == n
    assert summary["last_round"]["round"] == 2 and summary["failures"] == 0
    leftover = procs.wait_gone(procs.ray_pids() - before)
    assert not leftover, f"Ray processes left running: {leftover}"


def test_same_options_same_results_on_ray(tmp_path, ray_head):
    from strategies.simulate import simulate

    base = {**BASE, "num_clients": 6, "clients_per_round": 3, "new_users": 1, "out_dir": str(tmp_path),
            "ray_address": ray_head, "global_eval": False}
    # Flower's engine last: it leaves its own run id in this process's messages (a few bytes more each)
    for name, seed, engine in (("a", 0, "ray"), ("b", 0, "ray"), ("c", 1, "ray"), ("s", 0, "ray"),
                               ("f", 0, "flower")):
        simulate(load_config(overrides={**base, "name": name, "seed": seed, "engine": engine,
                                        "rounds": 1 if name == "c" else 2, "overlap_eval": name != "s"}))
    a, b, c, f, s = (_rounds(tmp_path / x) for x in "abcfs")
    assert timeless(a) == timeless(b)  # accuracies, losses, sampled clients, per-client records, bytes
    assert timeless(a) == timeless(s)  # evaluating while the next round trains changes nothing but the time
    assert timeless(a, wire=False) == timeless(f, wire=False)  # Flower's engine: the same run...
    assert a[0]["setup_bytes_wire"] == 0 < f[0]["setup_bytes_wire"]  # ...after a hello exchange with its nodes
    assert a[1]["trained"] != c[1]["trained"]  # another seed: other clients...
    assert a[1]["train_loss"] != c[1]["train_loss"]                   # ...and other training
