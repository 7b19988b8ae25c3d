"""experiments/compare_runs.py: two runs are the same run when their records differ only in wall time."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = str(Path(__file__).resolve().parents[1] / "experiments" / "compare_runs.py")
RECORDS = [{"round": 0, "acc_mean": 0.5, "seconds": 1.0, "sim_seconds": 2.0, "per_client": {"0": {"eval_seconds": 0.1}}},
           {"round": 1, "acc_mean": 0.6, "seconds": 3.0, "sim_seconds": 4.0, "extra": {"central": {"train_seconds": 1}}}]


def _run(folder: Path, records, state=(1.0, 2.0)) -> Path:
    folder.mkdir(parents=True)
    (folder / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    np.savez(folder / "final_state.npz", w=np.array(state, np.float32))
    return folder


def _compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, str(a), str(b)], capture_output=True, text=True, timeout=60)


def test_runs_that_differ_only_in_wall_time_are_identical(tmp_path):
    other = json.loads(json.dumps(RECORDS))
    other[0]["seconds"], other[0]["per_client"]["0"]["eval_seconds"], other[1]["extra"]["central"]["train_seconds"] = 9, 9, 9
    p = _compare(_run(tmp_path / "a", RECORDS), _run(tmp_path / "b", other))
    assert p.returncode == 0, p.stdout
    assert "identical (2 rounds" in p.stdout


def test_the_first_difference_is_named_and_the_exit_is_1(tmp_path):
    for i, (change, where) in enumerate([(("sim_seconds", 2.5), "round 0: sim_seconds: 2.0 != 2.5"),
                                         (("acc_mean", 0.6), "round 0: acc_mean: 0.5 != 0.6")]):
        other = json.loads(json.dumps(RECORDS))
        other[0][change[0]] = change[1]
        p = _compare(_run(tmp_path / f"a{i}", RECORDS), _run(tmp_path / f"b{i}", other))
        assert p.returncode == 1 and where in p.stdout, p.stdout
    p = _compare(_run(tmp_path / "c", RECORDS), _run(tmp_path / "d", RECORDS, state=(1.0, 2.5)))
    assert p.returncode == 1 and "final_state.npz: array w differs" in p.stdout


def test_folders_of_runs_are_matched_by_name(tmp_path):
    for side in ("x", "y"):
        _run(tmp_path / side / "one", RECORDS)
    _run(tmp_path / "x" / "two", RECORDS)
    p = _compare(tmp_path / "x", tmp_path / "y")
    assert p.returncode == 1
    assert "one: identical" in p.stdout and "two: DIFFERENT" in p.stdout and "1 of 2 runs identical" in p.stdout
