"""``FewShotModel``: a frozen backbone + an adapter + a Naive Bayes head, and its state.

Shared state (``state_arrays``: ``adapter/<name>``, ``head/<name>``) is what a client sends; personal
state (``personal_state_arrays``: ``adapter/<name>``) stays with one client. One model object may serve
many clients in turn: the caller saves a client's personal state after its work and loads it (or calls
``reset_personal``) before the next client's; per-task results live only inside ``task``.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from fedfit.adapters import Adapter, create_adapter
from fedfit.backbones import Backbone, create_backbone
from fedfit.heads import Head, create_head


FEATURE_NORMS = ("none", "l2")


class FewShotModel(nn.Module):
    """State names are ``adapter/<name>`` and ``head/<name>``: everything trained, nothing frozen.

    ``feature_norm = "l2"`` scales every feature vector the head sees (and every class statistic) to
    unit L2 norm, so a head's distances measure directions only: fine-tuning cannot change the scale
    of the logits by changing the scale of the features."""

    def __init__(self, backbone: Backbone, adapter: Adapter, head: Head, feature_norm: str = "none"):
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {feature_norm!r}")
        self.backbone, self.adapter, self.head, self.feature_norm = backbone, adapter, head, feature_norm

    def _finish(self, feats: torch.Tensor, norms: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Body features (B, D) -> what the head sees: the adapter's calibration, then the norm.
        ``norms``: a list that receives the raw features' L2 norms (B,) before ``feature_norm``."""
        f = self.adapter.calibrate(feats)
        if norms is not None:
            norms.append(f.detach().norm(dim=-1))
        return torch.nn.functional.normalize(f, dim=-1) if self.feature_norm == "l2" else f

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def reset(self) -> None:
        """Adapter (shared and personal state) and head back to their initial state."""
        self.adapter.reset()
        self.adapter.reset_personal()
        self.head.reset()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in list(self.adapter.parameters()) + list(self.head.parameters())]

    # ---------------------------------------------------------------- features

    def _as_input(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 numpy (n, S, S, 3) -> normalized (n, 3, S, S); a tensor is taken as already normalized."""
        return images if isinstance(images, torch.Tensor) else self.backbone.preprocess(images)

    @contextmanager
    def task(self, context: np.ndarray | torch.Tensor) -> Iterator[torch.Tensor | None]:
        """Task phase: ``with model.task(context): f = model.embed(target)``.

        context: the task's labelled images, normalized float (n, 3, S, S) or uint8 (n, S, S, 3). The
        adapter reads them once (CaSE: per-channel scales; with gradients when grad mode is on, so the
        context forward is part of the graph); every ``embed`` inside the block runs under the task.
        Yields the context's features (n, D) when the adapter computed them while opening the task,
        else None. The task's results are dropped on exit, also on exceptions. Adapters without a
        task phase (FiLM, none, full) do nothing here (the context is not even preprocessed)."""
        if not self.adapter.has_task_phase:
            yield None
            return
        feats = self.adapter.begin_task(self.backbone, self._as_input(context))  # cleans up if it raises
        try:
            yield None if feats is None else self._finish(feats)
        finally:
            self.adapter.end_task()

    def embed(self, x: torch.Tensor, context: torch.Tensor | None = None,
              norms: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Features (B, d) of normalized images x (B, 3, S, S); gradients flow to the adapter.
        ``context`` (normalized (n, 3, S, S)): embed x under a task opened from it. ``norms``: see ``_finish``."""
        if context is not None:
            with self.task(context):
                return self.embed(x, norms=norms)
        return self._finish(self.adapter.features(self.backbone, x), norms)

    def embed_task(self, context: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a task's context (n, d) and target (m, d) images (normalized), both under the
        task opened from the context. Without a task phase: one forward over both (as FiT does)."""
        with self.task(context) as ctx:
            if ctx is not None:
                return ctx, self.embed(target)
            f = self.embed(torch.cat([context, target]))
            return f[:len(context)], f[len(context):]

    @torch.no_grad()
    def embed_images(self, images: np.ndarray, batch_size: int | None = None,
                     norms: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Features (N, d) of uint8 images (N, S, S, 3), in batches, without gradients (under the open
        task, if any). ``batch_size``: default the backbone's (larger on a GPU). ``norms``: a list that
        receives the raw features' L2 norms per batch, before ``feature_norm`` (see ``_finish``)."""
        batch_size = batch_size or self.backbone.batch_size
        out = [self.embed(self.backbone.preprocess(images[i:i + batch_size]), norms=norms)
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.backbone.feature_dim, device=self.device)

    # ---------------------------------------------------------------- shared state

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

    # ---------------------------------------------------------------- personal state

    def personal_state_arrays(self) -> "OrderedDict[str, np.ndarray]":
        """This client's personal state, ``adapter/<name>`` -> float32 copy (never sent)."""
        return OrderedDict((f"adapter/{k}", v) for k, v in self.adapter.personal_state_arrays().items())

    def load_personal_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the whole personal state (keys as ``personal_state_arrays`` gives them; an empty dict
        forgets it). ValueError on keys that are not ``adapter/...``."""
        bad = [k for k in arrays if not k.startswith("adapter/")]
        if bad:
            raise ValueError(f"personal state keys must start with 'adapter/': {bad[:3]}")
        self.adapter.load_personal_state_arrays({k[8:]: v for k, v in arrays.items()})

    def reset_personal(self) -> None:
        """Forget the personal state (before a new client's work)."""
        self.adapter.reset_personal()

    @torch.no_grad()
    def set_history(self, images: np.ndarray, batch_size: int | None = None) -> None:
        """Give the adapter a client's unlabelled history images, uint8 (h, S, S, 3): their body
        features (h, D), computed once without gradients and outside any task, become personal state.
        No-op for adapters that use no history."""
        if not self.adapter.uses_history:
            return
        batch_size = batch_size or self.backbone.batch_size
        was = self.training
        self.eval()
        try:
            out = [self.adapter.features(self.backbone, self.backbone.preprocess(images[i:i + batch_size]))
                   for i in range(0, len(images), batch_size)]
        finally:
            self.train(was)
        d = self.backbone.feature_dim
        self.adapter.set_history(torch.cat(out) if out else torch.zeros(0, d, device=self.device))


def build_model(backbone: str = "efficientnet_lite0", weights: str = "default", adapter: str = "film",
                head: str = "lda", min_shots: int | None = None, device: str | None = None,
                head_options: dict | None = None, adapter_options: dict | None = None,
                precision: str = "auto", feature_norm: str = "none") -> FewShotModel:
    """Create backbone (frozen), attach the adapter (``adapter_options``: its keyword options), create
    the head (``auto`` needs ``min_shots``)."""
    bb = create_backbone(backbone, weights=weights, device=device, precision=precision)
    ad = create_adapter(adapter, bb, **(adapter_options or {}))
    hd = create_head(head, min_shots=min_shots, **(head_options or {}))
    return FewShotModel(bb, ad, hd, feature_norm=feature_norm).to(bb.device)
