"""CaSE / UpperCaSE (Patacchiola et al., NeurIPS 2022; github.com/mpatacchiola/contextual-squeeze-and-excitation).

A CaSE block sits after an activation and rescales its channels by a per-task scale computed from the
task's context set (``adapters/case.py`` there):

* adaptive mode (while ``begin_task`` runs the context (n, 3, S, S) through the body): the block input
  (n, C, H, W) is pooled over batch and space -> g (C,), standardized ``(g - mean(g)) / sqrt(var(g) +
  1e-5)`` (biased variance), then ``Linear(C, h) - SiLU - Linear(h, h) - SiLU - Linear(h, C) -
  Sigmoid``, times 2, h = max(16, C // 64): the scale (C,). The context itself leaves the block scaled
  by it, so the next block pools the adapted context.
* inference mode (every image embedded while the task is open): the stored scale multiplies every
  image's channels. Unlike the reference, the mode follows the explicit task phase, not
  ``module.training``; gradients flow through the stored scale into the context forward.
* no task open: the block is the IDENTITY (scale 1), so ``embed`` outside a task gives the plain
  backbone's features. ``end_task`` drops the scales (also on exceptions, via ``FewShotModel.task``).

The last Linear starts at weight 0 and bias 0 (scale 2 * sigmoid(0) = 1: identity at start). The other
two follow the reference's effective init: torchvision's EfficientNet constructor re-initializes every
Linear (uniform +- 1 / sqrt(out_features), bias 0) before CaSE's reset zeroes the last one. Here the
blocks are created after timm's constructor ran (nothing re-initializes them) from ``seed``.

Placement on EfficientNet(-Lite) (timm ``EfficientNet``): after the stem activation (``bn1``), after
each depthwise conv's activation (``bn1`` of a depthwise-separable block, ``bn2`` of an inverted
residual: FiT's FiLM positions; timm's ``BatchNormAct2d`` includes the activation), after the last 1x1
conv's activation (``bn2``) and after global pooling (``global_pool``): 19 blocks, 426,192 parameters
on Lite0 (1,704,768 bytes fp32). The blocks are the SHARED state.

UpperCaSE's linear head (weight (C, D), bias (C,)): in ``extra_eval`` it is fitted on the support
features (computed once without gradients) FROM ZEROS at every evaluation, as the reference's
``predict`` does (models/uppercase.py): Adam, lr linear from 1e-3 to 1e-5 over ``linear_steps`` (500),
weight decay 1e-5, minibatches of 128 drawn with replacement; then dropped. Reported as
``accuracy_linear`` / ``loss_linear`` beside the Naive Bayes head's. So an evaluation depends only on
the shared blocks, the client's support / query sets and the evaluation's seed, never on an earlier
round's head (with either ``case_training``), and CaSE keeps NO personal state: nothing per client
between rounds. Before 2026-12-07 the head was warm-started from the client's previous one and kept
as personal state (C x D + C numbers: 6,405 on Lite0 with 5 classes, 25.6 KB per client in its state
file); it was never sent, so the bytes on the wire do not change.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedfit.adapters.base import ADAPTERS, Adapter
from fedfit.heads import fit_linear_head


class CaSEBlock(nn.Module):
    """One CaSE block over C channels. ``forward(x)``: x (B, C, H, W) or (B, C) -> same shape."""

    def __init__(self, channels: int, reduction: int = 64, min_units: int = 16, out_mul: float = 2.0):
        super().__init__()
        h = max(min_units, channels // reduction)
        self.channels, self.out_mul = channels, out_mul
        self.lin1, self.lin2, self.lin3 = nn.Linear(channels, h), nn.Linear(h, h), nn.Linear(h, channels)
        self.adapting = False                    # set by CaSE.begin_task while the context goes through
        self.scale: torch.Tensor | None = None   # (1, C, 1, 1) or (1, C) of the open task

    def reset_parameters(self, gen: torch.Generator) -> None:
        """lin1, lin2: uniform +- 1/sqrt(out_features), bias 0 (the reference's effective init); lin3: 0."""
        with torch.no_grad():
            for lin in (self.lin1, self.lin2):
                bound = 1.0 / math.sqrt(lin.out_features)
                w = torch.rand(lin.weight.shape, generator=gen) * (2 * bound) - bound
                lin.weight.copy_(w)
                lin.bias.zero_()
            self.lin3.weight.zero_()
            self.lin3.bias.zero_()

    def generate(self, x: torch.Tensor) -> torch.Tensor:
        """The scale (1, C, 1, 1) / (1, C) from context activations x (n, C, H, W) / (n, C)."""
        g = x.mean(dim=(0, 2, 3)) if x.ndim == 4 else x.mean(dim=0)
        g = (g - g.mean()) / torch.sqrt(g.var(unbiased=False) + 1e-5)
        s = torch.sigmoid(self.lin3(F.silu(self.lin2(F.silu(self.lin1(g[None])))))) * self.out_mul
        return s.reshape(1, -1, *([1] * (x.ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapting:
            self.scale = self.generate(x)
        return x if self.scale is None else self.scale * x


class AfterModule(nn.Module):
    """``block(module(x))``: a frozen backbone module followed by an adapter-owned block (held in a
    tuple so its parameters are registered by the adapter only)."""

    def __init__(self, module: nn.Module, block: nn.Module):
        super().__init__()
        self.module = module
        self.after = (block,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after[0](self.module(x))


def case_positions(model: nn.Module) -> list[str]:
    """Module paths (forward order) CaSE follows on a timm EfficientNet; ValueError for other families."""
    from timm.models.efficientnet import EfficientNet

    from fedfit.adapters.film import fit_positions

    if not isinstance(model, EfficientNet):
        raise ValueError(f"CaSE's placement is defined here for timm EfficientNet(-Lite) backbones, not "
                         f"{type(model).__name__}")
    return fit_positions(model) + ["global_pool"]


def _channels(path: str, module: nn.Module, model: nn.Module) -> int:
    """Channels a block at ``path`` sees: a norm layer's features; after global pooling, the head's."""
    return int(model.num_features) if path == "global_pool" else int(module.num_features)


@ADAPTERS.register("case")
class CaSE(Adapter):
    """Shared parameters are named ``blocks.<module path>.lin{1,2,3}.{weight,bias}`` (the path's dots
    written as ``/``), in forward order."""

    name = "case"
    config_options = {"linear_steps": "case_linear_steps"}
    has_task_phase = True

    def __init__(self, reduction: int = 64, min_units: int = 16, linear_steps: int = 500,
                 linear_batch: int = 128, seed: int = 0):
        super().__init__()
        self.reduction, self.min_units, self.seed = reduction, min_units, seed
        self.linear_steps, self.linear_batch = linear_steps, linear_batch
        self.blocks = nn.ModuleDict()
        self.paths: list[str] = []

    def attach(self, backbone: nn.Module) -> "CaSE":
        model = backbone.model
        self.paths = case_positions(model)
        device = next(model.parameters()).device
        for path in self.paths:
            parent_path, _, leaf = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            module = getattr(parent, leaf)
            block = CaSEBlock(_channels(path, module, model), self.reduction, self.min_units).to(device)
            self.blocks[path.replace(".", "/")] = block
            setattr(parent, leaf, AfterModule(module, block))
        self.reset()
        return self

    def reset(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        for block in self.blocks.values():
            block.reset_parameters(gen)

    # ---------------------------------------------------------------- task phase

    def begin_task(self, backbone: nn.Module, context: torch.Tensor) -> torch.Tensor:
        """Adaptive forward of the context (n, 3, S, S): every block stores its scale; returns the
        context's features (n, D) (equal to embedding it again under the stored scales)."""
        if any(b.scale is not None for b in self.blocks.values()):
            raise RuntimeError("CaSE: a task is already open (end it before beginning another)")
        for b in self.blocks.values():
            b.adapting = True
        try:
            return backbone(context)
        except BaseException:
            self.end_task()  # no partial task survives a failed context forward
            raise
        finally:
            for b in self.blocks.values():
                b.adapting = False

    def end_task(self) -> None:
        for b in self.blocks.values():
            b.scale = None

    # ---------------------------------------------------------------- UpperCaSE's linear head (evaluation)

    def extra_eval(self, support, support_y, query, query_y, num_classes, seed=0):
        """Fit UpperCaSE's linear head from zeros on the support features (n, D) (``linear_steps`` Adam
        steps, minibatches from ``seed``), score the query features (m, D); nothing is kept."""
        w, b = fit_linear_head(support, support_y, num_classes, self.linear_steps, self.linear_batch,
                               rng=np.random.default_rng(seed))
        with torch.no_grad():
            logits = query.float() @ w.T + b
            y = query_y.to(support.device)
            return {"accuracy_linear": float((logits.argmax(1) == y).float().mean()),
                    "loss_linear": float(F.cross_entropy(logits, y))}
