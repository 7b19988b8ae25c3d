"""Run a config in simulation: ``simulate(cfg)``, on one of three engines (``engine``):

* ``ray`` (default): fedfit's pool of long-lived Ray actors running the ClientApp (``strategies.pool``);
* ``flower``: Flower's own simulation engine (``run_simulation``), what ``flwr run`` uses;
* ``inline``: every client in this process, one after another (``strategies.inline``).

Everything that can be checked is checked before Ray starts, each failing with one line: the
strategy and its options, the data source and the partition plan, the backbone and its weights,
and one client's resources against the machine (or, with ``ray_address``, the cluster: checked right
after joining it, before any client starts). Each Ray actor gets ``num_cpus`` and ``num_gpus``
(fractional allowed); an actor given a GPU picks CUDA (``device = auto``), the others see no GPU.
Every Ray process started here is stopped when the run ends, also on errors.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from fedfit.preflight import ResourceError, check_devices, check_resources, prepare
from strategies.ray_cluster import check_ray_address


def _quiet(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    for name in ("ray", "filelock"):
        logging.getLogger(name).setLevel(level)
    # Flower warns that run_simulation is deprecated in favour of `flwr run` (fedfit supports both);
    # its errors (a lost actor) stay visible. Client exceptions become error replies (clients.mods).
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.ERROR)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray hides GPUs from actors asked for none - today's default, which Ray announces it will change:
    # keep it explicitly (Flower's engine relies on it; fedfit's own actors also empty CUDA_VISIBLE_DEVICES)
    os.environ[RAY_HIDE_GPUS] = "1"
    warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO.*")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # Ray starts its workers at niceness 15: any other busy process (the ServerApp thread metering
    # messages, a second job) then starves the client actors - measured 20x slower here. Level them.
    os.environ.setdefault("RAY_worker_niceness", "0")


RAY_HIDE_GPUS = "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"  # "1": Ray empties CUDA_VISIBLE_DEVICES of 0-GPU actors


def preflight(cfg: dict[str, Any], resume: bool = False, overwrite: bool = False):
    """All checks that need no Ray; returns the server's ``RunSetup``. Raises ConfigError, DataError,
    BackboneError, ResourceError, RunExistsError or (resuming) RunFormatError, one line each."""
    import torch

    from fedfit.config import ConfigError, run_name
    from fedfit.results import check_run_dir
    from strategies import check_options

    try:
        check_options(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    run_dir = Path(cfg["out_dir"]) / run_name(cfg)
    check_run_dir(run_dir, resume, overwrite)
    from fedfit.trackers import TrackerError, check

    try:
        check(cfg["tracker"])
    except TrackerError as e:
        raise ConfigError(str(e)) from None
    if resume:  # a broken checkpoint or results line stops here, in one line, not inside a started federation
        from fedfit.results import check_resumable
        from strategies import checkpoint

        checkpoint.load(run_dir)
        check_resumable(run_dir)
    gpus = float(torch.cuda.device_count())
    if cfg["engine"] == "inline":
        check_devices(cfg, gpus)
    elif not cfg["ray_address"]:
        check_resources(cfg, float(os.cpu_count() or 1), gpus)
    else:
        check_ray_address(cfg["ray_address"])
    # the server needs the layout and the initial state, not a GPU: it never holds one for the whole run
    setup = prepare({**cfg, "device": "cpu"})
    from fedfit.clock import ClockError, devices
    from fedfit.faults import replayed_failures

    try:  # a device trace that cannot serve every partition stops here, not in round 1
        devices(cfg, setup.partitions)
    except ClockError as e:
        raise ConfigError(str(e)) from None
    try:  # ... and a run folder without rounds to replay
        replayed_failures(cfg)
    except ValueError as e:
        raise ConfigError(f"{e}; give the folder of a run that has rounds") from None
    return setup


def simulate(cfg: dict[str, Any], verbose: bool = False, resume: bool = False, overwrite: bool = False,
             client_app=None, callbacks: tuple = ()) -> dict[str, Any]:
    """Run ``cfg`` with one virtual SuperNode per partition (training clients + new users); returns the
    run summary (see strategies.loop). Raises what ``preflight`` raises before starting anything, and
    ``FederationError`` when the federation could not go on (results of the finished rounds stay in
    the run directory). ``resume`` continues the run after its checkpoint; ``overwrite`` starts it
    again over existing results; ``client_app`` replaces fedfit's ClientApp (tests of broken clients);
    ``callbacks`` (``strategies.callbacks.Callback``) join the round loop's own."""
    setup = preflight(cfg, resume, overwrite)
    _quiet(verbose)
    from clients.client_app import make_client_app

    app = client_app or make_client_app(cfg)
    if cfg["engine"] == "inline":
        from strategies.inline import InlineGrid
        from strategies.loop import run_federation

        return run_federation(InlineGrid(app, setup.partitions), cfg, setup=setup, resume=resume, overwrite=overwrite,
                              callbacks=callbacks)

    import ray

    worker_env, init = ray_options(cfg, verbose)
    private = None if cfg["ray_address"] else tempfile.mkdtemp(prefix="fedfit-ray-", dir="/tmp")
    _start_ray(ray, cfg, {**init, "_temp_dir": private} if private else init)
    try:
        res = ray.cluster_resources()
        check_resources(cfg, float(res.get("CPU", 0)), float(res.get("GPU", 0)),
                        where="the Ray cluster" if cfg["ray_address"] else "this machine")
        if cfg["engine"] == "flower":
            return _flower_engine(cfg, setup, app, verbose, resume, overwrite, init["logging_level"], callbacks)
        from strategies.loop import run_federation
        from strategies.pool import RayPoolGrid

        pool = RayPoolGrid(app, setup.partitions, num_cpus=cfg["num_cpus"], num_gpus=cfg["num_gpus"], env=worker_env)
        try:
            return run_federation(pool, cfg, setup=setup, resume=resume, overwrite=overwrite, callbacks=callbacks)
        finally:
            pool.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if private:
            shutil.rmtree(private, ignore_errors=True)


def ray_options(cfg: dict[str, Any], verbose: bool = False) -> tuple[dict[str, str], dict[str, Any]]:
    """(the Ray workers' environment, ``ray.init`` keyword options): fedfit on the workers' path, the
    data cache, one client's ``num_cpus`` as torch's thread count; logs only with ``verbose``."""
    root = str(Path(__file__).resolve().parents[1])
    threads = str(max(1, int(cfg["num_cpus"])))
    env = {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           "FEDFIT_CACHE": os.environ.get("FEDFIT_CACHE", ""), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           RAY_HIDE_GPUS: "1"}
    init = dict(include_dashboard=False, logging_level=logging.INFO if verbose else logging.ERROR,
                log_to_driver=verbose, runtime_env={"env_vars": env})
    return env, init


def _start_ray(ray, cfg: dict[str, Any], init: dict[str, Any], attempts: int = 2) -> None:
    """Start (or join) Ray; a local start-up that times out (a busy machine) is retried once, then a
    one-line ResourceError (joining a cluster is tried once: Ray retries inside). A local Ray gets a
    private temporary folder (``_temp_dir``): another program's ``ray.init()`` on this machine then
    cannot find it and attach to it (which it does through Ray's shared /tmp/ray otherwise, and then its
    shutdown can take fedfit's Ray down)."""
    import torch

    attempts = 1 if cfg["ray_address"] else attempts
    for attempt in range(attempts):
        try:
            if cfg["ray_address"]:
                ray.init(address=cfg["ray_address"], **init)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, num_gpus=torch.cuda.device_count(), **init)
            return
        except (ConnectionError, TimeoutError, RuntimeError, Exception) as e:
            if ray.is_initialized():
                ray.shutdown()
            if attempt == attempts - 1:
                where = f"at {cfg['ray_address']}" if cfg["ray_address"] else "on this machine"
                raise ResourceError(f"Ray could not start {where}: {str(e).strip().splitlines()[0]}") from None


def _flower_engine(cfg, setup, app, verbose, resume, overwrite, logging_level, callbacks=()) -> dict[str, Any]:
    """The run on Flower's own simulation engine (``run_simulation``), as ``flwr run`` would do it."""
    from flwr.simulation import run_simulation

    from strategies.server_app import make_server_app

    summary: dict[str, Any] = {}
    errors: list[BaseException] = []
    server = make_server_app(cfg, setup=setup, on_done=summary.update, on_error=errors.append, resume=resume,
                             overwrite=overwrite, callbacks=callbacks)
    run_simulation(server_app=server, client_app=app, num_supernodes=setup.partitions,
                   backend_config={"client_resources": {"num_cpus": cfg["num_cpus"], "num_gpus": cfg["num_gpus"]},
                                   "init_args": {"logging_level": logging_level}},
                   verbose_logging=verbose)
    if errors:
        raise errors[0]
    if not summary:
        raise RuntimeError("the simulation ended without results (see the errors above)")
    return summary


__all__ = ["ResourceError", "preflight", "simulate"]
