"""End to end on Flower's simulation engine (Ray): 4 clients, 2 rounds, digits at 32 px."""
import json
import os
import time

import numpy as np
import pytest

from fedfit.config import load_config


def _ray_pids() -> set[int]:
    """Live (not zombie) Ray processes."""
    pids = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().decode(errors="ignore")
                state = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z" and any(k in cmd for k in ("raylet", "gcs_server", "ray::", "default_worker.py")):
                pids.add(int(p))
    return pids


def _wait_gone(before: set[int], seconds: float = 20.0) -> set[int]:
    deadline = time.time() + seconds
    while (left := _ray_pids() - before) and time.time() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to check for leftover Ray processes")
def test_four_clients_two_rounds_on_ray(tmp_path):
    from strategies.simulate import simulate

    before = _ray_pids()
    cfg = load_config(overrides={"dataset": "digits", "image_size": 32, "num_clients": 4, "clients_per_round": 2,
                                 "rounds": 2, "local_steps": 3, "queries": 5, "out_dir": str(tmp_path),
                                 "name": "sim", "eval_clients": 0})
    summary = simulate(cfg)
    run = tmp_path / "sim"
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["bytes_up_wire"] == 0 and rounds[0]["eval_clients"] == 4
    for r in rounds[1:]:
        assert r["clients"] == 2 and r["rejected"] == 0
        # two clients, one packed fp32 state each way: payload exact, framing <= 5%
        assert r["bytes_up_payload"] == r["bytes_down_payload"] == 2 * 4 * summary_state(run)
        assert r["bytes_up_payload"] < r["bytes_up_wire"] <= 1.05 * r["bytes_up_payload"]
        assert 0.0 <= r["acc_mean"] <= 1.0 and r["train_loss"] > 0
        assert r["global_acc"] is not None
    assert rounds[2]["cum_bytes_wire"] == sum(r["bytes_up_wire"] + r["bytes_down_wire"] for r in rounds)
    state = np.load(run / "final_state.npz")
    assert sum(v.size for v in state.values()) == summary_state(run)
    assert summary["last_round"]["round"] == 2
    leftover = _wait_gone(before)
    assert not leftover, f"Ray processes left running: {leftover}"


def summary_state(run) -> int:
    return json.loads((run / "config.json").read_text())["state_size"]
