"""``STRATEGIES``: name -> factory(cfg, n, **sampling) building a fedfit strategy (one file each)."""
from fedfit.registry import Registry

STRATEGIES = Registry("strategy")
