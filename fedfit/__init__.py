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
