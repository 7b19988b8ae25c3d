"""The adapter interface: the small trainable part that sits in or on a frozen backbone.

An adapter attaches once to a ``Backbone`` (it may wrap some of its modules) and owns every tensor
that is trained. Its state comes in two kinds, each an ordered dict of named float32 arrays:

* SHARED state (``state_arrays`` / ``load_state_arrays``): the registered parameters; aggregated by the
  server and sent every round.
* PERSONAL state (``personal_state_arrays`` / ``load_personal_state_arrays`` / ``reset_personal``):
  what stays on ONE client across rounds and is never sent (ICIIA's history features). It is never
  an ``nn.Parameter`` of the adapter, so it is never in ``state_arrays`` nor in
  ``trainable_parameters``. Loading replaces it whole: nothing of the previous client survives.

Hooks, in the order a forward meets them (defaults do nothing, so FiLM / none / full ignore them):

1. ``begin_task(backbone, context)`` / ``end_task()``: a task phase; the adapter may read the task's
   context images (labelled support) once before the target images go through (CaSE). Opened and
   closed by ``FewShotModel.task``.
2. ``features(backbone, x)``: pooled features (B, D) of the body under the adapter (and the open task).
3. ``calibrate(f)``: a transform of pooled features (B, D) -> (B, D) before the head (ICIIA).
4. ``extra_eval(...)``: extra accuracies computed from support / query features beside the Naive
   Bayes head's (UpperCaSE's linear head: ``{"accuracy_linear": ...}``).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from fedfit.registry import Registry

ADAPTERS: "Registry[Adapter]" = Registry("adapter")
"""Adapter classes by name; ``create_adapter(name, backbone, **options)`` builds and attaches one."""


def to_arrays(named) -> "OrderedDict[str, np.ndarray]":
    """(name, tensor) pairs -> ordered name -> float32 numpy copy."""
    return OrderedDict((k, v.detach().cpu().numpy().astype(np.float32, copy=True)) for k, v in named)


def check_arrays(kind: str, arrays: dict[str, np.ndarray], expected: dict[str, tuple[int, ...] | None]) -> None:
    """Raise ValueError on missing / extra keys, wrong shapes (``None``: any shape), non-finite values."""
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(f"{kind} mismatch: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, shape in expected.items():
        a = np.asarray(arrays[k])
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{kind} {k!r}: shape {a.shape}, expected {tuple(shape)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{kind} {k!r}: non-finite values")


class Adapter(nn.Module):
    """Base class. Subclasses create their parameters in ``attach`` and override the hooks they need."""

    name = "adapter"
    # the run options (declared in ``fedfit/options/``) this adapter takes: keyword of ``__init__`` -> option name;
    # ``fedfit.federated.adapter_options`` reads them from here, so an adapter's option lives in its file
    # and in its group of fedfit/options/, nowhere else
    config_options: dict[str, str] = {}
    has_task_phase = False   # True: ``begin_task`` reads the context (FewShotModel.task preprocesses it)
    uses_history = False     # True: ``set_history`` keeps the client's unlabelled history features
    keeps_personal = False   # True: the adapter has personal state to keep per client across rounds

    @property
    def has_personal_state(self) -> bool:
        """Whether a client's work must load and save personal state (its own or its history's)."""
        return self.keeps_personal or self.uses_history

    def attach(self, backbone: nn.Module) -> "Adapter":
        raise NotImplementedError

    # ---------------------------------------------------------------- forward hooks

    def begin_task(self, backbone: nn.Module, context: torch.Tensor) -> torch.Tensor | None:
        """Open a task from normalized context images (n, 3, S, S). May return the context's body
        features (n, D) when it computed them on the way (then callers need not embed the context
        again); None otherwise. Gradients flow through whatever the task stores. If it raises, it
        leaves no task open."""
        return None

    def end_task(self) -> None:
        """Drop every per-task result (called also when the task's work raised)."""

    def features(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Pooled body features (B, D) of normalized images x (B, 3, S, S) under the adapter."""
        return backbone(x)

    def calibrate(self, feats: torch.Tensor) -> torch.Tensor:
        """Features (B, D) -> features (B, D) seen by the head; identity unless overridden. Each row
        must depend on its own image only (never on the batch it came in)."""
        return feats

    def extra_eval(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                   query_y: torch.Tensor, num_classes: int, seed: int = 0) -> dict[str, float]:
        """Extra metrics from support features (n, D) + labels and query features (m, D) + labels,
        e.g. ``{"accuracy_linear": 0.71}``. May update personal state."""
        return {}

    def reseed(self, seed: int) -> None:
        """Seed the adapter's own random choices in training (e.g. dropout masks); no-op by default."""

    # ---------------------------------------------------------------- shared state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_arrays(self) -> "OrderedDict[str, np.ndarray]":
        """SHARED state: ordered name -> float32 array copy of every trained tensor (what goes on the wire)."""
        return to_arrays(self.named_parameters())

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Set every trained tensor; raises ValueError on missing/extra keys, wrong shapes, non-finite values."""
        own = dict(self.named_parameters())
        check_arrays("adapter state", arrays, {k: tuple(p.shape) for k, p in own.items()})
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(torch.as_tensor(np.asarray(arrays[k]), dtype=p.dtype))

    def reset(self) -> None:
        """SHARED state back to the initial (identity) state."""
        raise NotImplementedError

    # ---------------------------------------------------------------- personal state

    def personal_state_arrays(self) -> "OrderedDict[str, np.ndarray]":
        """PERSONAL state: ordered name -> float32 array copy; never sent, never aggregated."""
        return OrderedDict()

    def load_personal_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the whole personal state by ``arrays`` (an empty dict = ``reset_personal``);
        ValueError on unknown keys, bad shapes or non-finite values."""
        if arrays:
            raise ValueError(f"adapter {self.name!r} has no personal state; got {sorted(arrays)[:3]}")

    def reset_personal(self) -> None:
        """Forget the personal state (a new client)."""

    def set_history(self, feats: torch.Tensor) -> None:
        """Keep a client's unlabelled history features (h, D) as personal state (``uses_history``)."""
