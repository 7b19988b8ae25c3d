"""Run a config on Flower's simulation engine (Ray): ``simulate(cfg)``.

Ray is started here (or joined, with ``ray_address``) before Flower's backend sees it, so resources
are checked first: a client asking for more CPUs or GPUs than the machine (or cluster) has is a
clear error instead of Flower's silent hang. Each virtual client is a Ray actor with ``num_cpus`` and
``num_gpus`` (fractional allowed); an actor given a GPU picks CUDA (``device = auto``). Every Ray
process started here is stopped when the run ends, also on errors.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any


class ResourceError(RuntimeError):
    """The requested per-client resources cannot be satisfied."""


def _quiet(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    for name in ("ray", "filelock"):
        logging.getLogger(name).setLevel(level)
    # Flower warns that run_simulation is deprecated in favour of `flwr run` (fedfit supports both);
    # its errors (a client that raised, a lost actor) stay visible.
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.ERROR)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # Ray starts its workers at niceness 15: any other busy process (the ServerApp thread metering
    # messages, a second job) then starves the client actors - measured 20x slower here. Level them.
    os.environ.setdefault("RAY_worker_niceness", "0")


def check_resources(cfg: dict[str, Any], available: dict[str, float]) -> None:
    """Raise ResourceError when one client needs more than ``available`` (Ray resource dict) offers."""
    cpus, gpus = float(available.get("CPU", 0)), float(available.get("GPU", 0))
    if cfg["num_cpus"] > cpus:
        raise ResourceError(f"num_cpus = {cfg['num_cpus']} per client, but Ray has {cpus:g} CPUs: no client could "
                            f"ever start (Flower would wait forever). Use num_cpus <= {cpus:g}.")
    if cfg["num_gpus"] > 0 and gpus <= 0:
        raise ResourceError(f"num_gpus = {cfg['num_gpus']} per client, but Ray sees no GPU here. Use num_gpus = 0.")
    if cfg["num_gpus"] > gpus:
        raise ResourceError(f"num_gpus = {cfg['num_gpus']} per client, but Ray has {gpus:g} GPUs.")


def simulate(cfg: dict[str, Any], verbose: bool = False) -> dict[str, Any]:
    """Run ``cfg`` with ``num_clients`` virtual SuperNodes; returns the run summary (see strategies.loop)."""
    import ray
    from flwr.simulation import run_simulation

    from clients.client_app import make_client_app
    from strategies.server_app import make_server_app

    _quiet(verbose)
    root = str(Path(__file__).resolve().parents[1])
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
                        "FEDFIT_CACHE": os.environ.get("FEDFIT_CACHE", ""), "OMP_NUM_THREADS": str(max(1, int(cfg["num_cpus"])))}}
    init = dict(include_dashboard=False, logging_level=logging.INFO if verbose else logging.ERROR,
                log_to_driver=verbose, runtime_env=env)
    if cfg["ray_address"]:
        ray.init(address=cfg["ray_address"], **init)
    else:
        import torch

        ray.init(num_cpus=os.cpu_count() or 1, num_gpus=torch.cuda.device_count(), **init)
    summary: dict[str, Any] = {}
    try:
        check_resources(cfg, ray.cluster_resources())
        run_simulation(server_app=make_server_app(cfg, on_done=summary.update), client_app=make_client_app(cfg), num_supernodes=cfg["num_clients"],
                       backend_config={"client_resources": {"num_cpus": cfg["num_cpus"], "num_gpus": cfg["num_gpus"]},
                                       "init_args": {"logging_level": init["logging_level"]}},
                       verbose_logging=verbose)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if not summary:
        raise RuntimeError("the simulation ended without results (see the errors above)")
    return summary
