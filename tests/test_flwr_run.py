"""README's ``flwr run`` recipe, followed as written in a fresh ``FLWR_HOME``: the connection block, then
the command (only the federation's size and the run's options made small: digits, 2 clients + 1 new user)."""
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import procs

REPO = Path(__file__).resolve().parents[1]


def _recipe() -> tuple[str, list[str]]:
    readme = (REPO / "README.md").read_text()
    connection = re.search(r"once:\n\n```toml\n(.*?)```", readme, re.S).group(1)
    command = re.search(r"```bash\n# one SuperNode per partition[^\n]*\n(.*?)\n```", readme, re.S).group(1)
    return connection, shlex.split(command.replace("\\\n", " "))


def _flower_or_ray(pid: int) -> bool:
    line = procs.cmdline(pid)
    return any(k in line for k in ("flower-superlink", "flwr-serverapp", "flower-superexec", "flwr-simulation",
                                   "raylet", "gcs_server", "ray::", "default_worker.py"))


@pytest.mark.slow
def test_readme_flwr_run_recipe_finishes_in_a_fresh_flwr_home(tmp_path):
    connection, argv = _recipe()
    env_vars = {}
    while "=" in argv[0] and not argv[0].startswith("-"):  # VAR=value before the command
        k, v = argv.pop(0).split("=", 1)
        env_vars[k] = v
    assert env_vars == {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"} and argv[:4] == ["flwr", "run", ".", "fedfit-sim"]
    small = {"--federation-config": "num-supernodes=3 client-resources-num-cpus=1",
             "--run-config": (f"dataset='digits' image_size=32 num_clients=2 clients_per_round=1 rounds=1 new_users=1 "
                              f"queries=2 local_steps=2 out_dir='{tmp_path / 'runs'}' name='recipe'")}
    for flag, value in small.items():
        argv[argv.index(flag) + 1] = value
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(connection)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, **env_vars, "FLWR_HOME": str(home), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    before = procs.all_pids()
    t0 = time.monotonic()
    try:
        p = subprocess.run([str(Path(bin_dir) / argv[0]), *argv[1:]], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)
        out = p.stdout + p.stderr
        assert p.returncode == 0, out[-3000:]
        run = tmp_path / "runs" / "recipe"
        deadline = time.monotonic() + 120  # --stream ends with the run; the summary is its last write
        while not (run / "summary.json").is_file() and time.monotonic() < deadline:
            time.sleep(1)
        assert (run / "summary.json").is_file(), out[-3000:]
        assert "fedfit: done in" in out and time.monotonic() - t0 < 600
    finally:  # Flower leaves its local SuperLink (and the simulation's Ray) running: stop them by pid
        started = {q for q in procs.live(procs.all_pids() - before) if _flower_or_ray(q)}
        assert not procs.stop(started)
