"""Adapters: the trainable part of a model that sits in or on the frozen backbone. One file each,
registered by name in ``ADAPTERS`` (``fedfit.adapters.base``)."""
from fedfit.adapters.base import ADAPTERS, Adapter
from fedfit.adapters.case import CaSE
from fedfit.adapters.film import FiLM
from fedfit.adapters.full import FullFineTune
from fedfit.adapters.iciia import ICIIA
from fedfit.adapters.none import NoAdapter
from fedfit.adapters.scale_shift import ScaleShift


def create_adapter(name: str, backbone, **options) -> Adapter:
    """Build the named adapter and attach it to ``backbone`` (modules of the backbone may be wrapped)."""
    return ADAPTERS.create(name, **options).attach(backbone)


__all__ = ["ADAPTERS", "Adapter", "CaSE", "FiLM", "FullFineTune", "ICIIA", "NoAdapter", "ScaleShift", "create_adapter"]
