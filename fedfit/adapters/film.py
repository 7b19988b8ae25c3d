"""FiLM (FiT): a per-channel scale gamma (starts 1) and shift beta (starts 0) after chosen norm layers.

``y = gamma * norm(x) + beta``, applied before the norm layer's activation (timm's ``BatchNormAct2d``
/ ``GroupNormAct`` fuse norm and activation; FiLM goes between them), using the frozen running
statistics. Placement (``positions``):

* ``"fit"`` (FiT's): EfficientNet / MobileNet family: the stem norm, the depthwise-conv norm of every
  block (``bn1`` of a depthwise-separable block, ``bn2`` of an inverted residual, ``bn1`` of an
  edge residual), the head norm: 20,544 parameters on EfficientNet-B0 / Lite0. ResNet: the last norm
  of every block (``bn3`` of a bottleneck, ``bn2`` of a basic block); ResNetV2 / BiT: ``norm3`` of
  every pre-activation bottleneck and the final norm: 11,648 parameters on BiT-R50x1.
* ``"all-norms"``: after every norm layer (what training all BatchNorm affine weights amounts to).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fedfit.adapters.base import ADAPTERS, Adapter


class FiLMNorm(nn.Module):
    """Wraps a frozen norm layer: normalize with running statistics, then ``gamma * . + beta``, then
    the layer's own drop/activation if it has them. gamma, beta: (C,) parameters owned by the adapter
    (held in a tuple so they are not registered twice: the backbone's own parameters stay frozen)."""

    def __init__(self, norm: nn.Module, gamma: nn.Parameter, beta: nn.Parameter):
        super().__init__()
        self.norm = norm
        self.film = (gamma, beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm
        gamma, beta = self.film
        w = n.weight if n.weight is not None else torch.ones_like(gamma)
        b = n.bias if n.bias is not None else torch.zeros_like(beta)
        w, b = w * gamma, b * gamma + beta  # folded affine: same as FiLM after the norm
        if isinstance(n, _BatchNorm):
            y = F.batch_norm(x, n.running_mean, n.running_var, w, b, False, 0.0, n.eps)
        elif isinstance(n, nn.GroupNorm):
            y = F.group_norm(x, n.num_groups, w, b, n.eps)
        else:
            raise TypeError(f"FiLM cannot wrap {type(n).__name__}")
        if hasattr(n, "drop"):
            y = n.drop(y)
        if hasattr(n, "act"):
            y = n.act(y)
        return y


def _channels(norm: nn.Module) -> int:
    return int(getattr(norm, "num_features", None) or norm.num_channels)


def fit_positions(model: nn.Module) -> list[str]:
    """Module paths (in forward order) of the norm layers FiT puts FiLM after; raises for unknown families."""
    from timm.models import _efficientnet_blocks as eb
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet
    from timm.models.resnetv2 import PreActBasic, PreActBottleneck, ResNetV2

    paths: list[str] = []
    if isinstance(model, (EfficientNet, MobileNetV3)):
        paths.append("bn1")
        for name, m in model.blocks.named_modules():
            if isinstance(m, eb.DepthwiseSeparableConv) or isinstance(m, eb.EdgeResidual):
                paths.append(f"blocks.{name}.bn1")
            elif isinstance(m, (eb.InvertedResidual, eb.CondConvResidual)):
                paths.append(f"blocks.{name}.bn2")
        if isinstance(getattr(model, "bn2", None), nn.Module):
            paths.append("bn2")
    elif isinstance(model, ResNet):
        for name, m in model.named_modules():
            if isinstance(m, Bottleneck):
                paths.append(f"{name}.bn3")
            elif isinstance(m, BasicBlock):
                paths.append(f"{name}.bn2")
    elif isinstance(model, ResNetV2):
        for name, m in model.named_modules():
            if isinstance(m, PreActBottleneck):
                paths.append(f"{name}.norm3")
            elif isinstance(m, PreActBasic):
                paths.append(f"{name}.norm2")
        paths.append("norm")
    else:
        raise ValueError(f"FiT's FiLM placement is defined for EfficientNet/MobileNet, ResNet and ResNetV2 "
                         f"backbones, not {type(model).__name__}; use positions='all-norms'")
    return paths


def all_norm_positions(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (_BatchNorm, nn.GroupNorm))]


@ADAPTERS.register("film")
@ADAPTERS.register("film-all-norms", positions="all-norms")
class FiLM(Adapter):
    """Parameters are named ``<module path>.gamma`` / ``.beta`` (dots replaced by ``/``), in forward order."""

    name = "film"

    def __init__(self, positions: str = "fit"):
        super().__init__()
        if positions not in ("fit", "all-norms"):
            raise ValueError(f"FiLM positions must be 'fit' or 'all-norms', not {positions!r}")
        self.positions = positions
        self.gammas = nn.ParameterDict()
        self.betas = nn.ParameterDict()
        self.paths: list[str] = []

    def attach(self, backbone: nn.Module) -> "FiLM":
        model = backbone.model
        self.paths = fit_positions(model) if self.positions == "fit" else all_norm_positions(model)
        device = next(model.parameters()).device
        for path in self.paths:
            parent_path, _, leaf = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            norm = getattr(parent, leaf)
            c = _channels(norm)
            key = path.replace(".", "/")
            self.gammas[key] = nn.Parameter(torch.ones(c, device=device))
            self.betas[key] = nn.Parameter(torch.zeros(c, device=device))
            setattr(parent, leaf, FiLMNorm(norm, self.gammas[key], self.betas[key]))
        return self

    def reset(self) -> None:
        with torch.no_grad():
            for g in self.gammas.values():
                g.fill_(1.0)
            for b in self.betas.values():
                b.zero_()
