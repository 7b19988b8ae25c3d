"""The Python API: ``fedfit.run(...)`` runs a federation from a notebook or a script, as ``fedfit simulate``.

    import fedfit
    run = fedfit.run(dataset="digits", image_size=32, rounds=3, engine="inline")
    run.last.acc_mean, run.last.global_acc, run.last.cum_bytes_wire      # the last round's numbers
    [r.acc_mean for r in run.rounds]                                      # accuracy per round
    run.summary["failures"], run.final_state()["adapter/gammas.bn2"]

Options are those of ``fedfit/defaults.toml`` (keyword arguments, or a TOML file and then keyword
arguments); they are checked before any work, as on the command line, and a bad one raises
``fedfit.config.ConfigError`` (data: ``DataError``, model: ``BackboneError``, machine:
``ResourceError``). A federation that cannot go on raises ``strategies.loop.FederationError``; client
messages that failed are counted in the returned run (``run.summary["failures"]``), not raised.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fedfit.config import load_config
from fedfit.results import Run, read_run


def run(config: str | Path | None = None, *, resume: str | Path | None = None, overwrite: bool = False,
        verbose: bool = False, **options: Any) -> Run:
    """Run one federation (simulated: the ``engine`` option) and return it read back from its run
    directory. ``config``: a TOML file of options; ``options``: option = value, over the file;
    ``resume``: a run directory to continue after its last complete round (its own options);
    ``overwrite``: start again over existing results."""
    from strategies.simulate import simulate  # Flower and Ray load only when a run starts

    if resume is not None:
        from fedfit.cli import resume_config

        cfg = resume_config(str(resume), None, [f"{k}={v}" for k, v in options.items()])
    else:
        cfg = load_config(config, options)
    summary = simulate(cfg, verbose=verbose, resume=resume is not None, overwrite=overwrite)
    return read_run(summary["run_dir"])
