"""Methods: what is trained, where, and what a round does with its replies; one file each, registered by
name in ``METHODS`` (``fedfit.methods.base``: the protocol the round loop runs)."""
from fedfit.methods.base import METHODS, Method, Reply, ServerStep, method_of
from fedfit.methods.centralized import Centralized
from fedfit.methods.fit import Fit
from fedfit.methods.full import Full
from fedfit.methods.head_only import HeadOnly
from fedfit.methods.local_only import LocalOnly

__all__ = ["METHODS", "Method", "Reply", "ServerStep", "method_of", "Centralized", "Fit", "Full", "HeadOnly",
           "LocalOnly"]
