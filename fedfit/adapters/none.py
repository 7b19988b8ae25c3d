"""``none``: nothing trained in the body; the frozen backbone's features as they are (``head-only``)."""
from fedfit.adapters.base import ADAPTERS, Adapter


@ADAPTERS.register("none")
class NoAdapter(Adapter):
    name = "none"

    def attach(self, backbone):
        return self

    def reset(self) -> None:
        pass
