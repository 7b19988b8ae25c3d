"""The Flower ServerApp (``flwr run .`` and deployment): fedfit's defaults <- the run config."""
from __future__ import annotations

import os
from typing import Any, Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedfit.config import load_config
from strategies.loop import run_federation


# Under `flwr run` the simulation runtime starts Ray in this process after importing the app: level
# Ray's worker niceness (15 by default) so client actors are not starved (see strategies/simulate.py).
os.environ.setdefault("RAY_worker_niceness", "0")


def config_from_context(context: Context) -> dict[str, Any]:
    """fedfit's config from a Flower run config (same keys; '-' and '_' both accepted)."""
    return load_config(overrides={k.replace("-", "_"): v for k, v in dict(context.run_config).items()})


def make_server_app(cfg: dict[str, Any] | None = None,
                    on_done: Callable[[dict[str, Any]], None] | None = None) -> ServerApp:
    """A ServerApp running ``cfg`` (``fedfit simulate``), or the run config (``flwr run``) when None;
    ``on_done`` receives the run summary."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        summary = run_federation(grid, cfg if cfg is not None else config_from_context(context))
        if on_done is not None:
            on_done(summary)

    return app


app = make_server_app()
