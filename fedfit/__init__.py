"""fedfit: federated few-shot personalization with FiLM adapters and Naive Bayes heads.

The core (this package) is plain PyTorch and numpy; Flower lives in ``clients/`` and ``strategies/``,
which share the message format ``fedfit.wire`` (the one module here that knows Flower's records).
``fedfit.deploy`` is operator tooling for real machines (no Flower, no torch).
"""
__version__ = "0.1.0"


def run(*args, **kwargs):
    """``fedfit.api.run``: one federation from Python, returned as a ``fedfit.results.Run``."""
    from fedfit.api import run as _run

    return _run(*args, **kwargs)


def load_run(run_dir):
    """``fedfit.results.read_run``: a run directory read back as a ``fedfit.results.Run``."""
    from fedfit.results import read_run

    return read_run(run_dir)



def __getattr__(name):
    # ``fedfit.sweep(...)`` runs an experiment: the module ``fedfit.sweep`` is callable (see its end)
    if name == "sweep":
        import importlib

        return importlib.import_module("fedfit.sweep")
    raise AttributeError(f"module 'fedfit' has no attribute {name!r}")
