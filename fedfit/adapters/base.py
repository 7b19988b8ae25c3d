"""The adapter interface: the small trainable part that sits in or on a frozen backbone.

An adapter attaches once to a ``Backbone`` (it may wrap some of its modules) and owns every tensor
that is trained and sent over the wire. Its state travels as an ordered dict of named float32 arrays.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from fedfit.registry import Registry

ADAPTERS: "Registry[Adapter]" = Registry("adapter")
"""Adapter classes by name; ``create_adapter(name, backbone, **options)`` builds and attaches one."""


class Adapter(nn.Module):
    """Base class. Subclasses create their parameters in ``attach`` and may override ``features``."""

    name = "adapter"

    def attach(self, backbone: nn.Module) -> "Adapter":
        raise NotImplementedError

    def features(self, backbone: nn.Module, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Adapted features (B, D) of normalized images x (B, 3, S, S); ``context`` are the task's
        labelled images, for adapters that read them (CaSE-style); FiLM ignores it."""
        return backbone(x)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_arrays(self) -> "OrderedDict[str, np.ndarray]":
        """Ordered name -> float32 array copy of every trained tensor (what goes on the wire)."""
        return OrderedDict((k, v.detach().cpu().numpy().astype(np.float32, copy=True))
                           for k, v in self.named_parameters())

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Set every trained tensor; raises ValueError on missing/extra keys, wrong shapes, non-finite values."""
        own = dict(self.named_parameters())
        missing, extra = sorted(set(own) - set(arrays)), sorted(set(arrays) - set(own))
        if missing or extra:
            raise ValueError(f"adapter state mismatch: missing {missing[:3]}, unexpected {extra[:3]}")
        for k, p in own.items():
            a = np.asarray(arrays[k])
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"adapter state {k!r}: shape {a.shape}, expected {tuple(p.shape)}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"adapter state {k!r}: non-finite values")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(torch.as_tensor(np.asarray(arrays[k]), dtype=p.dtype))

    def reset(self) -> None:
        """Back to the initial (identity) state."""
        raise NotImplementedError
