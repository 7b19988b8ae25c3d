"""Adapters: the trainable, transmitted part of a model. One file each, registered by name."""
from fedfit.adapters.base import Adapter
from fedfit.adapters.film import FiLM
from fedfit.adapters.full import FullFineTune
from fedfit.registry import Registry

ADAPTERS: Registry[Adapter] = Registry("adapter")
ADAPTERS.register("film")(lambda **kw: FiLM(positions="fit", **kw))
ADAPTERS.register("film-all-norms")(lambda **kw: FiLM(positions="all-norms", **kw))
ADAPTERS.register("none")(lambda **kw: NoAdapter())
ADAPTERS.register("full")(lambda **kw: FullFineTune())


class NoAdapter(Adapter):
    """Nothing trained in the body: the frozen backbone's features as they are (``head-only``)."""

    name = "none"

    def attach(self, backbone):
        return self

    def reset(self) -> None:
        pass


def create_adapter(name: str, backbone, **kwargs) -> Adapter:
    """Build the named adapter and attach it to ``backbone`` (modules of the backbone may be wrapped)."""
    return ADAPTERS.create(name, **kwargs).attach(backbone)


__all__ = ["ADAPTERS", "Adapter", "FiLM", "FullFineTune", "NoAdapter", "create_adapter"]
