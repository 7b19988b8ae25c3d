"""fedfit: federated few-shot personalization with FiLM adapters and Naive Bayes heads.

The core (this package) is plain PyTorch and numpy; Flower lives in ``clients/`` and ``strategies/``.
"""
__version__ = "0.1.0"
