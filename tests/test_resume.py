"""Checkpoints and exact resume: a run killed with SIGKILL and resumed ends as an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedfit.client_state import EVALUATE, TRAIN, ClientStateStore, version
from fedfit.results import RoundRecord, RunWriter, holds_results
from tests.runs import rounds as _rounds
from tests.runs import timeless, unresumed
from tests.tiny import TINY_ARGS

FEDFIT = str(Path(sys.executable).with_name("fedfit"))
# FedAdam (server moments) + top-k with error feedback (a residual per client) + local state files:
# everything a checkpoint must carry. The in-process engine keeps the test fast; the checkpoint and
# resume code are the same for every engine.
OPTIONS = ["engine=inline", *TINY_ARGS, "num_clients=4", "clients_per_round=2", "rounds=3",
           "local_steps=2", "queries=5", "new_users=0", "strategy=fedadam", "codec_up=topk:0.1", "delta=true",
           "global_eval=false"]






def _kill_after(args: list[str], run: Path, predicate, timeout: float = 300) -> None:
    p = subprocess.Popen([FEDFIT, "simulate", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        while not predicate(run):
            assert p.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() - t0 < timeout
            time.sleep(0.05)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The uninterrupted run both kill tests compare with."""
    out = tmp_path_factory.mktemp("whole")
    p = subprocess.run([FEDFIT, "simulate", *OPTIONS, f"out_dir={out}", "name=whole"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "\x1b[" not in p.stdout + p.stderr and "\r" not in p.stdout  # piped: plain lines, no live display
    assert "| eta " in p.stdout.splitlines()[-3]  # round 2 of 3 says when the run will end
    return out / "whole"


def test_sigkill_after_round_2_then_resume_gives_the_uninterrupted_results(tmp_path, whole):
    out = f"out_dir={tmp_path}"
    run = tmp_path / "killed"
    _kill_after([*OPTIONS, out, "name=killed"], run,
                lambda d: (d / "rounds.jsonl").is_file() and '"round": 2,' in (d / "rounds.jsonl").read_text())
    assert not (run / "summary.json").exists()
    again = subprocess.run([FEDFIT, "simulate", *OPTIONS, out, "name=killed"], capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr
    resumed = subprocess.run([FEDFIT, "simulate", "--resume", str(run)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _rounds(whole), _rounds(run)
    assert [r["round"] for r in b] == [0, 1, 2, 3]
    # what resuming cost is recorded with round 3: the killed attempt's round-3 training (sent with round 2's
    # evaluation, so done before round 2 was recorded; maybe part of round 3's evaluation) and the new hello
    summary = json.loads((run / "summary.json").read_text())
    train3 = a[3]["bytes_down_wire"] + a[3]["bytes_up_wire"]
    eval3 = a[3]["eval_bytes_down_wire"] + a[3]["eval_bytes_up_wire"]
    assert train3 <= summary["resume_lost_bytes_wire"] <= train3 + eval3
    assert b[3]["resume_bytes_wire"] == summary["resume_lost_bytes_wire"] + summary["resume_setup_bytes_wire"]
    assert all(r["resume_bytes_wire"] == 0 for r in a + b[:3])
    assert not (run / "pending_traffic.jsonl").read_text()  # the journal: nothing in flight at the end
    assert timeless(unresumed(a)) == timeless(unresumed(b))  # wire sizes included: reproduced to the byte
    x, y = np.load(whole / "final_state.npz"), np.load(run / "final_state.npz")
    assert sorted(x) == sorted(y) and all(np.array_equal(x[k], y[k]) for k in x)


def test_a_kill_at_any_moment_loses_at_most_the_round_in_flight(tmp_path, whole):
    run = tmp_path / "k"
    _kill_after([*OPTIONS, f"out_dir={tmp_path}", "name=k"], run, lambda d: (d / "rounds.jsonl").is_file())
    start, delay = time.monotonic(), float(np.random.default_rng(7).uniform(1, 6))  # then at a random moment
    _kill_after(["--resume", str(run)], run, lambda d: time.monotonic() - start > delay)
    assert (len(_rounds(run)) if holds_results(run) else 0) <= 4
    final = subprocess.run([FEDFIT, "simulate", "--resume", str(run)], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert timeless(unresumed(_rounds(run))) == timeless(unresumed(_rounds(whole)))


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    w = RunWriter(tmp_path, {"x": 1})
    for r in range(3):
        w.write(RoundRecord(round=r, acc_mean=0.5))
    with open(tmp_path / "rounds.jsonl", "a") as f:
        f.write('{"round": 3, "clie')  # killed mid-append
    w2 = RunWriter(tmp_path, {"x": 1}, resume_after=1)
    assert [r.round for r in w2.records] == [0, 1]
    assert [json.loads(x)["round"] for x in (tmp_path / "rounds.jsonl").read_text().splitlines()] == [0, 1]


def test_client_state_versions_make_a_redone_round_ignore_its_interrupted_attempt(tmp_path):
    s = ClientStateStore(tmp_path / "c.sqlite")
    s.put(3, "ef", version(1, TRAIN), np.ones(4))
    s.put(3, "ef", version(2, TRAIN), np.full(4, 2.0))  # round 2's attempt, then a crash
    assert s.get(3, "ef", version(2, TRAIN))[0] == 1.0      # round 2 redone: sees round 1's state
    assert s.get(3, "ef", version(2, EVALUATE))[0] == 2.0   # round 2's evaluation: sees round 2's training
    assert s.get(4, "ef", version(9, TRAIN)) is None
    for r in range(3, 9):
        s.put(3, "ef", version(r, TRAIN), np.full(4, float(r)))
    rows = s._db.execute("SELECT COUNT(*) FROM state WHERE partition = 3").fetchone()[0]
    assert rows == 3  # pruned: the newest and the two before it


def test_existing_results_are_refused_before_any_work(tmp_path):
    run = tmp_path / "r"
    RunWriter(run, {}).write(RoundRecord(round=0))
    p = subprocess.run([FEDFIT, "simulate", "dataset=digits", f"out_dir={tmp_path}", "name=r"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "--resume" in p.stderr and "--overwrite" in p.stderr
    assert [json.loads(x)["round"] for x in (run / "rounds.jsonl").read_text().splitlines()] == [0]  # untouched


@pytest.mark.parametrize("extra", [["rounds=9"], ["--config", "x.toml"]])
def test_resume_refuses_changed_options(tmp_path, extra):
    RunWriter(tmp_path / "r", {"dataset": "digits"}).write(RoundRecord(round=0))
    p = subprocess.run([FEDFIT, "simulate", "--resume", str(tmp_path / "r"), *extra], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "--resume continues a run with its own options" in p.stderr


def test_resume_as_an_option_keeps_the_runs_options(tmp_path):
    """``resume = true`` (how a deployed run goes on after its SuperLink restarts): the run folder's own options
    or a refusal naming the first that differs; where the folder is, where and how the clients run, the
    output and options it never recorded are not compared."""
    from fedfit.config import load_config
    from fedfit.results import RunExistsError, check_same_options

    cfg = load_config(overrides={"dataset": "digits", "out_dir": str(tmp_path), "name": "r"})
    RunWriter(tmp_path / "r", {k: v for k, v in cfg.items() if k != "max_reply_mb"}).write(RoundRecord(round=0))
    check_same_options(tmp_path / "r", {**cfg, "resume": True, "out_dir": "/elsewhere", "max_reply_mb": 5.0,
                                        "timeout_s": 9, "engine": "inline", "tracker": "tensorboard"})
    with pytest.raises(RunExistsError, match=r"was started with lr = 0.0015, not 0.003: a resumed run keeps"):
        check_same_options(tmp_path / "r", {**cfg, "lr": 0.003})
    with pytest.raises(RunExistsError, match=r"precision"):
        check_same_options(tmp_path / "r", {**cfg, "precision": "fp32" if cfg["precision"] != "fp32" else "auto"})
    check_same_options(tmp_path / "new", cfg)  # nothing written yet: nothing to compare


@pytest.mark.parametrize("damage", ["checkpoint", "line"])
def test_resume_over_a_broken_checkpoint_or_results_line_is_one_line_exit_2(tmp_path, whole, damage):
    """A truncated checkpoint.pkl, or a complete rounds.jsonl line that is not JSON: --resume stops
    before any work with one line naming the file, no traceback, and changes nothing."""
    import shutil

    run = tmp_path / "whole"
    shutil.copytree(whole, run)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "out_dir": str(tmp_path)}))
    if damage == "checkpoint":
        data = (run / "checkpoint.pkl").read_bytes()
        (run / "checkpoint.pkl").write_bytes(data[: len(data) // 2])
    else:
        lines = (run / "rounds.jsonl").read_text().splitlines()
        (run / "rounds.jsonl").write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    before = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()}
    p = subprocess.run([FEDFIT, "simulate", "--resume", str(run)], capture_output=True, text=True, timeout=120)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    assert ("checkpoint.pkl is unreadable" if damage == "checkpoint" else "rounds.jsonl:2: malformed round record") \
        in err[0] and "--overwrite" in err[0]
    assert {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()} == before
