"""``fedfit bench``: the PSS sampler (fedfit.bench.memory) and one small bench on the in-process engine
(digits at 32 px, 3 clients, 1 round, no Ray): every required figure is in the JSON, with sane values."""
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch

from fedfit.bench import memory

pytestmark = pytest.mark.skipif(not any(os.path.isfile(f"/proc/self/{f}") for f in ("smaps_rollup", "smaps")),
                                reason="needs /proc/PID/smaps_rollup (Linux)")

MiB = 1 << 20
# allocate and touch N MiB, say so, then wait until stdin closes (or a signal)
HOLD = "import sys; x = b'\\x01' * ({mib} << 20); print('ready', flush=True); sys.stdin.read()"


def test_sampler_sees_a_child_that_allocates_200_mb():
    s = memory.PssSampler(interval=0.05)
    before, split = s.sample()
    assert before > 10 * MiB and split["driver"] == before  # this process alone, as the driver
    with s:
        child = subprocess.Popen([sys.executable, "-c", HOLD.format(mib=200)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            for _ in range(3):
                s.sample()
        finally:
            child.stdin.close()
            child.wait(timeout=30)
    peak = s.peak
    assert peak.members[child.pid][0] == "other"  # a descendant that is neither the driver nor Ray
    grown = peak.bytes - before
    assert 200 * MiB <= peak.members[child.pid][1] <= 200 * MiB + 60 * MiB, peak.members[child.pid]
    assert 190 * MiB <= grown <= 200 * MiB + 80 * MiB, grown / MiB
    assert peak.split["other"] >= 200 * MiB and sum(peak.split.values()) == peak.bytes
    assert s.samples >= 5 and s.to_dict()["peak_pss_bytes"] == peak.bytes


def test_sampler_follows_a_matching_process_that_left_the_tree(tmp_path):
    """A process reparented away from this one (as a Ray process may be) still counts when its command
    line matches; Ray's session directories name the driver that started them."""
    marker = f"fedfit-memtest-{uuid.uuid4().hex}"
    ready = tmp_path / "ready"
    code = (f"import pathlib, time; x = b'\\x01' * (50 << 20); pathlib.Path({str(ready)!r}).touch(); "
            f"time.sleep(60)")
    spawn = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], "
             "start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
             "stderr=subprocess.DEVNULL); print(p.pid)")
    tree_only = memory.PssSampler()
    matched = memory.PssSampler(match=marker)
    pid = int(subprocess.run([sys.executable, "-c", spawn, code, marker], capture_output=True, text=True,
                             check=True, timeout=60).stdout)
    try:
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        assert pid not in tree_only.members()
        assert matched.members().get(pid) == "other"
        total, split = matched.sample()
        assert split["other"] >= 50 * MiB
    finally:
        os.kill(pid, signal.SIGKILL)

    pattern = memory.ray_session_pattern(18849)
    import re

    assert re.search(pattern, "raylet --session_dir=/tmp/ray/session_2026-11-23_14-54-12_242420_18849/x")
    assert not re.search(pattern, "--log_dir=/tmp/ray/session_2026-11-23_14-54-12_242420_188490/logs")
    assert not re.search(pattern, "--log_dir=/tmp/ray/session_2026-11-23_14-54-12_242420_1884/logs")


def _finite_positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_a_small_bench_reports_every_figure(tmp_path, capsys):
    from fedfit.app import cli

    out = tmp_path / "bench.json"
    code = cli.main(["bench", "dataset=digits", "image_size=32", "num_clients=3", "clients_per_round=2",
                     "local_steps=3", "queries=5", "new_users=0", "engine=inline", "--rounds", "1", "--clients", "2",
                     "--no-ray", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    r = json.loads(out.read_text())
    for key in ("train_vs_bare", "round_vs_compute", "wire_vs_payload"):
        assert _finite_positive(r[key]), (key, r[key])
        assert isinstance(r["targets"][key]["pass"], bool)
        assert key in printed
    assert ">= 0.9" in printed and "<= 1.25" in printed and "<= 1.05" in printed
    assert 1.0 < r["wire_vs_payload"] < 1.2  # one packed fp32 array each way: framing only
    assert r["peak_pss_bytes"] > 100e6 and r["memory"]["split_at_peak_bytes"]["driver"] > 100e6
    assert r["ray_startup_s"] is None and r["ray_startup"] is None  # --no-ray
    assert r["pool_vs_flower_engine"] is None and r["flower_engine"] is None  # no pool to compare
    assert r["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # engine = inline: any visible GPU
    m = r["machine"]
    assert m["cpu_count"] >= 1 and m["torch_threads_default"] >= 1 and m["torch"] and m["flwr"] and m["ray"]
    assert r["options"]["dataset"] == "digits" and r["options"]["rounds"] == 1
    # the raw numbers behind each ratio
    bare, cl, fed = r["bare"], r["clients"], r["federation"]
    assert bare["batch_images"] == 5 * 5 and bare["threads"] == 1 and bare["trainable_parameters"] == 20544
    assert _finite_positive(bare["forward_images_per_s"]) and _finite_positive(bare["forward_backward_images_per_s"])
    # FLOPs by torch's counter: the backbone is frozen, so the backward computes input gradients only
    # (no weight gradients): about one more forward; both below the matmul limit
    assert 1.5 < bare["forward_backward_flops_per_image"] / bare["forward_flops_per_image"] < 3.5
    assert 0 < bare["forward_fraction_of_matmul"] < 1 and _finite_positive(bare["matmul_gflops_per_s"])
    assert cl["clients"] == 2 and cl["train_images"] == 2 * 3 * 25 and _finite_positive(cl["eval_images_per_s"])
    assert r["clock_calibration"] == {"image_size": 32, "train_s_per_image": pytest.approx(1 / cl["train_images_per_s"])}
    paired = r["paired"]
    assert r["train_vs_bare"] == pytest.approx(sorted(p["ratio"] for p in paired["pairs"])[len(paired["pairs"]) // 2])
    assert all(p["ratio"] == pytest.approx(p["client_images_per_s"] / p["bare_images_per_s"]) for p in paired["pairs"])
    assert fed["workers"] == 1 and [x["round"] for x in fed["per_round"]] == [0, 1]
    one = fed["per_round"][1]
    assert one["round_vs_compute"] == pytest.approx(one["seconds"] / one["client_compute_s"])
    assert one["client_compute_s"] > 0 and one["engine_s"] > 0 and one["server_s"] >= 0
    # round 0's evaluation went out with round 1's training (overlap_eval); round 1 only evaluates
    assert set(fed["per_round"][0]["engine_by_kind_s"]) == {"train+evaluate"}
    assert set(one["engine_by_kind_s"]) == {"evaluate"}
    w = fed["wire"]
    assert w["bytes_up_payload"] == w["bytes_down_payload"] == 2 * 4 * 20544
    assert r["wire_vs_payload"] == max(w["bytes_up_wire"] / w["bytes_up_payload"],
                                       w["bytes_down_wire"] / w["bytes_down_payload"])
    # the run went to a temporary folder, removed afterwards; nothing else written beside the report
    assert r["run_dir"] is None and not os.path.exists(r["options"]["out_dir"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]


@pytest.mark.parametrize("options, says", [
    (["dataset=nope"], "dataset = 'nope' is unknown"),
    (["num_cpus=64"], "Use num_cpus <= "),
    (["strategy=bulyan"], "bulyan tolerates malicious = 1"),
])
def test_bad_options_fail_before_the_work(tmp_path, capsys, options, says):
    from fedfit.app import cli

    out = tmp_path / "bench.json"
    assert cli.main(["bench", "dataset=digits", *options, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not any(tmp_path.iterdir())


def test_a_child_between_fork_and_exec_counts_from_its_next_sample():
    """A forked child that has not exec'd yet holds its parent's pages: read a moment after the parent it
    would count them twice (a phantom peak), so it counts from its second sample on."""
    s = memory.PssSampler(interval=60)
    pid = os.fork()
    if pid == 0:  # the child: still this process's copy, never exec's
        time.sleep(3)
        os._exit(0)
    try:
        time.sleep(0.2)
        _, first = s.sample()
        _, second = s.sample()
        assert first["other"] == 0 and second["other"] > 0
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_round_efficiency_counts_the_training_where_it_ran():
    from fedfit.bench.measures import round_efficiency

    def rec(r, train, ev):
        return {"round": r, "seconds": 1.0, "per_client": {"0": {"train_seconds": train, "eval_seconds": ev}}}

    records = [rec(0, 0.0, 1.0), rec(1, 4.0, 1.0), rec(2, 6.0, 1.0)]
    seq = [x["client_compute_s"] for x in round_efficiency(records, 1)["per_round"]]
    ahead = [x["client_compute_s"] for x in round_efficiency(records, 1, overlap=True)["per_round"]]
    assert seq == [1.0, 5.0, 7.0]    # each round's own training and evaluation
    assert ahead == [5.0, 7.0, 1.0]  # an evaluation with the next round's training; the last evaluates only
    del records[1]["per_client"]["0"]["eval_seconds"]  # round 1 not evaluated: round 2 trains after it
    assert [x["client_compute_s"] for x in round_efficiency(records, 1, overlap=True)["per_round"]] == [5.0, 0.0, 7.0]
