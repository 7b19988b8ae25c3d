"""``FewShotModel``: a frozen backbone + an adapter + a Naive Bayes head, and its wire state."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from fedfit.adapters import Adapter, create_adapter
from fedfit.backbones import Backbone, create_backbone
from fedfit.heads import Head, create_head


class FewShotModel(nn.Module):
    """State names are ``adapter/<name>`` and ``head/<name>``: everything trained, nothing frozen."""

    def __init__(self, backbone: Backbone, adapter: Adapter, head: Head):
        super().__init__()
        self.backbone, self.adapter, self.head = backbone, adapter, head

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def reset(self) -> None:
        """Adapter and head back to their initial state."""
        self.adapter.reset()
        self.head.reset()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in list(self.adapter.parameters()) + list(self.head.parameters())]

    def embed(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Features (B, d) of normalized images x (B, 3, S, S); gradients flow to the adapter."""
        return self.adapter.features(self.backbone, x, context)

    @torch.no_grad()
    def embed_images(self, images: np.ndarray, batch_size: int = 128) -> torch.Tensor:
        """Features (N, d) of uint8 images (N, S, S, 3), in batches, without gradients."""
        out = [self.embed(self.backbone.preprocess(images[i:i + batch_size]))
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.backbone.feature_dim, device=self.device)

    def state_arrays(self) -> "OrderedDict[str, np.ndarray]":
        out = OrderedDict((f"adapter/{k}", v) for k, v in self.adapter.state_arrays().items())
        out.update((f"head/{k}", p.detach().cpu().numpy().astype(np.float32, copy=True))
                   for k, p in self.head.named_parameters())
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of ``state_arrays``; validates keys, shapes and finiteness before changing anything."""
        own = self.state_arrays()
        missing, extra = sorted(set(own) - set(arrays)), sorted(set(arrays) - set(own))
        if missing or extra:
            raise ValueError(f"model state mismatch: missing {missing[:3]}, unexpected {extra[:3]}")
        head = {k[5:]: np.asarray(v) for k, v in arrays.items() if k.startswith("head/")}
        for k, p in self.head.named_parameters():
            if head[k].shape != tuple(p.shape) or not np.all(np.isfinite(head[k])):
                raise ValueError(f"head state {k!r}: bad shape {head[k].shape} or non-finite values")
        self.adapter.load_state_arrays({k[8:]: v for k, v in arrays.items() if k.startswith("adapter/")})
        with torch.no_grad():
            for k, p in self.head.named_parameters():
                p.copy_(torch.as_tensor(head[k], dtype=p.dtype))


def build_model(backbone: str = "efficientnet_lite0", weights: str = "default", adapter: str = "film",
                head: str = "lda", min_shots: int | None = None, device: str | None = None,
                head_options: dict | None = None) -> FewShotModel:
    """Create backbone (frozen), attach the adapter, create the head (``auto`` needs ``min_shots``)."""
    bb = create_backbone(backbone, weights=weights, device=device)
    ad = create_adapter(adapter, bb)
    hd = create_head(head, min_shots=min_shots, **(head_options or {}))
    return FewShotModel(bb, ad, hd).to(bb.device)
