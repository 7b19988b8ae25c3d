"""fedfit: federated few-shot personalization with FiLM adapters and Naive Bayes heads.

The core (this package) is plain PyTorch and numpy; Flower lives in ``clients/`` and ``strategies/``,
which share the message format ``fedfit.wire`` (the one module here that knows Flower's records).
On top, ``fedfit.app`` (the command line, the Python API, sweeps) and ``fedfit.bench`` (``fedfit
bench``) are the only parts that import those layers; ``fedfit.deploy`` is operator tooling for real
machines (no Flower, no torch). ``run``, ``load_run`` and ``sweep`` below are the Python API
(``fedfit.app.api``), loaded when first called.
"""
__version__ = "0.1.0"


def run(*args, **kwargs):
    """``fedfit.app.api.run``: one federation from Python, returned as a ``fedfit.results.Run``."""
    from fedfit.app.api import run as _run

    return _run(*args, **kwargs)


def load_run(run_dir):
    """``fedfit.results.read_run``: a run directory read back as a ``fedfit.results.Run``."""
    from fedfit.results import read_run

    return read_run(run_dir)


def sweep(*args, **kwargs):
    """``fedfit.app.api.sweep``: a named experiment (``experiments/NAME.toml``) run, resumable, returned as
    a ``fedfit.app.api.SweepResult``."""
    from fedfit.app.api import sweep as _sweep

    return _sweep(*args, **kwargs)
