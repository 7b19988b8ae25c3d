"""Run a config on Flower's simulation engine (Ray): ``simulate(cfg)``.

Everything that can be checked is checked before Ray starts, each failing with one line: the
strategy and its options, the data source and the partition plan, the backbone and its weights,
and one client's resources against the machine (or, with ``ray_address``, the cluster: checked right
after joining it, before any client starts). Each virtual client is a Ray actor with ``num_cpus`` and
``num_gpus`` (fractional allowed); an actor given a GPU picks CUDA (``device = auto``). Every Ray
process started here is stopped when the run ends, also on errors.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fedfit.preflight import ResourceError, check_resources, prepare


def _quiet(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    for name in ("ray", "filelock"):
        logging.getLogger(name).setLevel(level)
    # Flower warns that run_simulation is deprecated in favour of `flwr run` (fedfit supports both);
    # its errors (a lost actor) stay visible. Client exceptions become error replies (clients.mods).
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.ERROR)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # Ray starts its workers at niceness 15: any other busy process (the ServerApp thread metering
    # messages, a second job) then starves the client actors - measured 20x slower here. Level them.
    os.environ.setdefault("RAY_worker_niceness", "0")


def preflight(cfg: dict[str, Any]):
    """All checks that need no Ray; returns the server's ``RunSetup``. Raises ConfigError, DataError,
    BackboneError or ResourceError (one line each)."""
    import torch

    from fedfit.config import ConfigError
    from strategies import check_options

    try:
        check_options(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not cfg["ray_address"]:
        check_resources(cfg, float(os.cpu_count() or 1), float(torch.cuda.device_count()))
    return prepare({**cfg, "device": "cpu"} if cfg["device"] == "auto" else cfg)


def simulate(cfg: dict[str, Any], verbose: bool = False) -> dict[str, Any]:
    """Run ``cfg`` with ``num_clients`` virtual SuperNodes; returns the run summary (see strategies.loop).
    Raises what ``preflight`` raises before starting anything, and ``FederationError`` when the
    federation could not go on (results of the finished rounds stay in the run directory)."""
    setup = preflight(cfg)
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
    errors: list[BaseException] = []
    try:
        res = ray.cluster_resources()
        check_resources(cfg, float(res.get("CPU", 0)), float(res.get("GPU", 0)),
                        where="the Ray cluster" if cfg["ray_address"] else "this machine")
        run_simulation(server_app=make_server_app(cfg, setup=setup, on_done=summary.update, on_error=errors.append),
                       client_app=make_client_app(cfg), num_supernodes=setup.partitions,
                       backend_config={"client_resources": {"num_cpus": cfg["num_cpus"], "num_gpus": cfg["num_gpus"]},
                                       "init_args": {"logging_level": init["logging_level"]}},
                       verbose_logging=verbose)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if errors:
        raise errors[0]
    if not summary:
        raise RuntimeError("the simulation ended without results (see the errors above)")
    return summary


__all__ = ["ResourceError", "preflight", "simulate"]
