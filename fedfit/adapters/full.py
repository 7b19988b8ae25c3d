"""``full``: every weight of the backbone is trained and transmitted (the BiT-style baseline).

Norm layers keep their running statistics (eval mode), as for FiLM, so the only difference from FiT
is *what* is trained and sent: all ~3.4M Lite0 weights instead of 20,544 FiLM parameters.
"""
from __future__ import annotations

from fedfit.adapters.base import ADAPTERS, Adapter


@ADAPTERS.register("full")
class FullFineTune(Adapter):
    name = "full"

    def attach(self, backbone):
        self.body = backbone.model  # registered here: its weights become this adapter's parameters
        for p in self.body.parameters():
            p.requires_grad_(True)
        self._initial = {k: v.detach().clone() for k, v in self.body.named_parameters()}
        return self

    def train(self, mode: bool = True) -> "FullFineTune":
        """Weights train, norm layers do not: the body stays in eval mode (running statistics are
        neither used from the batch nor updated), exactly as under FiLM."""
        super().train(mode)
        self.body.eval()
        return self

    def reset(self) -> None:
        self.load_state_arrays({f"body.{k}": v.cpu().numpy() for k, v in self._initial.items()})
