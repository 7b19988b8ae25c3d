import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download from a hub
torch.set_num_threads(min(2, os.cpu_count() or 1))


# Whole modules of federations run through subprocesses, Ray or real Flower servers: ``slow``, as is every
# test on the shared Ray head and every test that runs a federation in process (marked where it is;
# ``_whole_federations_are_slow`` fails one that is not). ``pytest -m "not slow"`` is the quick loop; CI
# runs everything.
SLOW_MODULES = {"test_deployment", "test_soak", "test_resume", "test_simulation", "test_faults", "test_bench", "test_gpu"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or "ray_head" in item.fixturenames:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _whole_federations_are_slow(request, monkeypatch):
    """A test not marked ``slow`` that runs a whole federation in this process fails, naming the fix: the
    quick loop (``-m "not slow"``) holds no federation, wherever a test file puts one."""
    if request.node.get_closest_marker("slow") is None:
        from strategies import loop

        def refused(self, *args, **kwargs):
            pytest.fail(f"{request.node.nodeid} runs a whole federation: mark it @pytest.mark.slow", pytrace=False)

        monkeypatch.setattr(loop.Federation, "run", refused)


@pytest.fixture(scope="session")
def lite0():
    """The default backbone with its offline ImageNet weights (shared, never modified in place)."""
    from fedfit.backbones import create_backbone

    return create_backbone("efficientnet_lite0", device="cpu")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _ray_head(tmp_path_factory, num_cpus: int, num_gpus: int):
    """A ``ray start --head`` on 127.0.0.1 with these resources (GPUs may be fake: Ray only counts them);
    yields its address, then stops this head's own processes by process id."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from tests import procs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tmp_path_factory.mktemp("ray")
    before = procs.ray_pids()
    env = {**os.environ, "RAY_worker_niceness": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}
    ray = str(Path(sys.executable).with_name("ray"))
    p = subprocess.run([ray, "start", "--head", f"--port={port}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
                        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                       env=env, capture_output=True, text=True, timeout=120)
    started = procs.ray_pids() - before
    if p.returncode != 0:
        procs.stop(started)
        pytest.fail(f"ray start --head failed: {p.stderr[-2000:]}")
    import re

    ours = re.compile(rf"{re.escape(str(temp))}|:{port}\b")  # its temp dir, or its GCS port (the Ray client
    mine = {p for p in started if ours.search(procs.cmdline(p))} or started  # server, re-parented to init)
    yield f"127.0.0.1:{port}"
    left = procs.stop(mine, grace=3.0)  # and, through the process tree, every worker its raylet started
    assert not left, f"Ray processes left running: {left}"


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """One Ray head for the tests that share it (``ray start --head``, reached on 127.0.0.1), stopped
    by process id at the end: its address, for ``ray_address``. Also the multi-machine path: a run
    that joins an existing cluster. It claims ONE GPU, a fake one where the machine has none (Ray only
    counts it), so the GPU logic that needs no GPU is tested everywhere: how many clients share it,
    which devices their actors see; clients asked for no GPU see none, as on a GPU machine."""
    yield from _ray_head(tmp_path_factory, os.cpu_count() or 1, 1)
