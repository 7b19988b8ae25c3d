"""``head-only``: nothing trained in the body (adapter ``none``): the clients fine-tune only the head's
mixing weights (none for ProtoNets); aggregated as ``fit``."""
from fedfit.methods.base import METHODS, Method


@METHODS.register("head-only")
class HeadOnly(Method):
    name = "head-only"
    adapter = "none"
