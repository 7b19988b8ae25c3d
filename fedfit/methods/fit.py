"""``fit``: FiT (Shysheya et al., ICLR 2023) federated: the sampled clients fine-tune the adapter (the
``adapter`` option: FiLM by default; CaSE, MTL scale-and-shift, ICIIA) and the head's mixing weights from
the global state with episodic steps; the configured strategy aggregates their states."""
from fedfit.methods.base import METHODS, Method


@METHODS.register("fit")
class Fit(Method):
    name = "fit"
