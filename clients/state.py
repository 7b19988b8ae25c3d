"""Where this client's state file is: the run directory in simulation, ``state-dir`` on a SuperNode."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context

from fedfit.client_state import ClientStateStore, open_store
from fedfit.config import run_name

LOCAL = "local"      # a local-only client's own state
RESIDUAL = "ef"      # the top-k error-feedback residual


def state_path(cfg: dict[str, Any], context: Context) -> Path:
    """``<state-dir>/<run name>.sqlite`` when the node config names a ``state-dir``, else the run
    directory's ``clients.sqlite`` (simulation: one machine, so a checkpoint of the run covers it)."""
    state_dir = context.node_config.get("state-dir")
    if state_dir:
        return Path(str(state_dir)).expanduser() / f"{run_name(cfg)}.sqlite"
    return Path(cfg["out_dir"]) / run_name(cfg) / "clients.sqlite"


def client_store(cfg: dict[str, Any], context: Context) -> ClientStateStore:
    return open_store(state_path(cfg, context))
