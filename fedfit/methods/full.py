"""``full``: every backbone weight fine-tuned (BiT-style full fine-tuning, adapter ``full``), same head and
episodes as ``fit``; aggregated as ``fit``."""
from fedfit.methods.base import METHODS, Method


@METHODS.register("full")
class Full(Method):
    name = "full"
    adapter = "full"
