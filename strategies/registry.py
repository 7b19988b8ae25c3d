"""``STRATEGIES``: name -> factory ``make(cfg, **sampling)`` returning a stock Flower strategy.

One file per strategy registers its factory; ``sampling`` are Flower's node-sampling arguments set
by ``strategies.create_strategy`` (fedfit samples clients itself and shows each strategy exactly the
sampled nodes, so Flower's own sampling takes them all).
"""
from fedfit.registry import Registry

STRATEGIES = Registry("strategy")
