"""The ``fedfit`` command fails before the work: one line that says what to change, a non-zero exit."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

FEDFIT = str(Path(sys.executable).with_name("fedfit"))


@pytest.mark.parametrize("options, says", [
    (["dataset=imagefolder", "data_root=/missing"], "/missing does not exist"),
    (["dataset=nope"], "dataset = 'nope' is unknown; choose one of:"),
    (["dataset=digits", "classes_per_client=11"], "cannot make 20 clients x 11 classes"),
    (["num_cpus=64"], "Use num_cpus <= "),
    (["strategy=nope"], "fedmedian, fedprox, fedtrimmedavg, fedyogi, krum, multikrum"),
    (["strategy=bulyan"], "bulyan tolerates malicious = 1 with clients_per_round >= 4f + 3"),
    (["head=nope"], "head = 'nope' is unknown"),
    (["timeout_s=0"], "timeout_s must be > 0"),
    (["ray_address=127.0.0.1:1"], "ray_address = 127.0.0.1:1: no Ray head answers there"),  # not Ray's minute of retries
])
def test_bad_options_fail_fast_in_one_line(tmp_path, monkeypatch, capsys, options, says):
    from fedfit.app import cli

    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    code = cli.main(["simulate", *options, f"out_dir={tmp_path}"])
    captured = capsys.readouterr()
    out = (captured.out + captured.err).strip().splitlines()
    assert code == 2, out
    assert len(out) <= 3 and "Traceback" not in captured.err, out
    assert says in out[-1], out
    assert time.monotonic() - t0 < 60  # seconds, not a Ray start
    assert not any(tmp_path.iterdir())  # nothing was written


def test_the_command_exits_2_in_one_line_on_a_bad_option(tmp_path):
    """The console script itself (a process of its own): exit status 2, one line, no traceback."""
    p = subprocess.run([FEDFIT, "simulate", "strategy=bulyan", f"out_dir={tmp_path}"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    out = (p.stdout + p.stderr).strip().splitlines()
    assert p.returncode == 2 and len(out) <= 3 and "Traceback" not in p.stderr, out
    assert "bulyan tolerates malicious = 1 with clients_per_round >= 4f + 3" in out[-1], out
    assert not any(tmp_path.iterdir())


def test_a_federation_that_cannot_go_on_exits_4_in_one_line(monkeypatch, capsys):
    from fedfit.app import cli
    from strategies import simulate as sim
    from strategies.loop import FederationError

    def broken(cfg, verbose=False, **kw):
        raise FederationError("no client could train: RuntimeError: broken (2 of 2 clients failed)")

    monkeypatch.setattr(sim, "simulate", broken)
    assert cli.main(["simulate", "dataset=digits"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fedfit: error: no client could train: RuntimeError: broken (2 of 2 clients failed)"]


def test_client_failures_make_a_finished_run_exit_3(monkeypatch, capsys, tmp_path):
    from fedfit.app import cli
    from strategies import simulate as sim

    monkeypatch.setattr(sim, "simulate", lambda cfg, verbose=False, **kw: {"run_dir": str(tmp_path), "failures": 2})
    assert cli.main(["simulate", "dataset=digits"]) == 3
    assert "2 client messages failed" in capsys.readouterr().err


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"From Python .*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # the example writes runs/api-example here
    exec(compile(block, "README.md", "exec"), {})
    import fedfit
    from fedfit.config import ConfigError

    run = fedfit.load_run(tmp_path / "runs" / "api-example")
    assert [r.round for r in run.rounds] == [0, 1, 2] and run.config["rounds"] == 2
    assert run.last.clients == 2 and 0 <= run.last.acc_mean <= 1 and run.summary["failures"] == 0
    assert run.last.new_users == 2 and "adapter/gammas.bn2" in run.final_state()
    with pytest.raises(ConfigError, match="unknown option 'roundz'"):
        fedfit.run(roundz=3)
