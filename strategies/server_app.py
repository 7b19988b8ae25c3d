"""The Flower ServerApp (``fedfit simulate``, ``flwr run .`` and deployment).

Under ``fedfit simulate`` the options and the preflight result come bound; under ``flwr run`` the
ServerApp reads fedfit's defaults <- the run config and runs the same checks itself (the run config's
strategy name, data and model) before round 0.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedfit.config import load_config
from fedfit.preflight import RunSetup
from strategies.loop import run_federation

# Under `flwr run` the simulation runtime starts Ray in this process after importing the app: level
# Ray's worker niceness (15 by default) so client actors are not starved (see strategies/simulate.py).
os.environ.setdefault("RAY_worker_niceness", "0")


def config_from_context(context: Context) -> dict[str, Any]:
    """fedfit's config from a Flower run config (same keys; '-' and '_' both accepted)."""
    return load_config(overrides={k.replace("-", "_"): v for k, v in dict(context.run_config).items()})


def make_server_app(cfg: dict[str, Any] | None = None, setup: RunSetup | None = None,
                    on_done: Callable[[dict[str, Any]], None] | None = None,
                    on_error: Callable[[BaseException], None] | None = None, resume: bool = False,
                    overwrite: bool = False, callbacks: tuple = ()) -> ServerApp:
    """A ServerApp running ``cfg`` (or the run config when None). ``on_done`` receives the summary;
    with ``on_error`` an exception of the run is handed over instead of raised into Flower (which
    would print its traceback)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            summary = run_federation(grid, cfg if cfg is not None else config_from_context(context), setup=setup,
                                     resume=resume, overwrite=overwrite, callbacks=callbacks)
        except Exception as e:
            if on_error is None:
                raise
            on_error(e)
            return
        if on_done is not None:
            on_done(summary)

    return app


app = make_server_app()
