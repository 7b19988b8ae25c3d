"""MTL scaling and shifting (Sun et al., CVPR 2019; ``pytorch/models/conv2d_mtl.py`` of
github.com/yaoyao-liu/meta-transfer-learning).

Every frozen conv W (C_out, C_in/groups, kh, kw) gets a scale (C_out, C_in/groups, 1, 1), starting at 1,
multiplied into W broadcast over the kernel (one scalar per 2-D kernel, not per channel), and a shift
(C_out,), starting at 0, added to the conv's bias. Convs WITHOUT a bias get no shift, as in the
reference (``Conv2dMtl`` registers ``mtl_bias = None`` when ``bias=False``); every conv of timm's
EfficientNet-Lite is bias-free (a BatchNorm follows each), so there the faithful adapter has scales
only. ``shift_bias_free=True`` departs from the reference and gives those convs a shift too (a new
bias (C_out,) starting at 0).

Variants (both SHARED state):

* ``scale_shift``: every conv. Lite0: 3,155,168 scale numbers (95% of its 3,328,992 conv weights),
  0 shifts: 12,620,672 bytes fp32 (with ``shift_bias_free``: + 21,008 shifts = 12,704,704 bytes).
* ``scale_shift-kxk``: only convs whose kernel is larger than 1x1 (the stem and the depthwise convs).
  Lite0: 9,056 scale numbers, 0 shifts: 36,224 bytes fp32 (with ``shift_bias_free``: + 8,992 shifts =
  72,192 bytes).

Forward: the scaled weight is computed once per call and goes through ``F.conv2d`` with the conv's own
stride / padding / dilation / groups; timm's TF-"same" convs (``Conv2dSame``: stride-2 convs of the
``tf_`` models) keep their input-size-dependent padding (``timm.layers.conv2d_same.conv2d_same``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedfit.adapters.base import ADAPTERS, Adapter


def _conv_same():
    from timm.layers.conv2d_same import Conv2dSame, conv2d_same

    return Conv2dSame, conv2d_same


class ScaleShiftConv(nn.Module):
    """Wraps a frozen conv: ``conv(x; W * scale, bias + shift)``. scale (C_out, C_in/g, 1, 1) and shift
    (C_out,) or None are owned by the adapter (held in a tuple: not registered twice)."""

    def __init__(self, conv: nn.Conv2d, scale: nn.Parameter, shift: nn.Parameter | None):
        super().__init__()
        self.conv = conv
        self.ss = (scale, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        scale, shift = self.ss
        w = c.weight * scale
        b = c.bias
        if shift is not None:
            b = shift if b is None else b + shift
        conv2d_same_cls, conv2d_same = _conv_same()
        if isinstance(c, conv2d_same_cls):
            return conv2d_same(x, w, b, c.stride, c.padding, c.dilation, c.groups)
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)


def conv_paths(model: nn.Module, kxk_only: bool) -> list[str]:
    """Paths of the convs to wrap (forward-registration order); TypeError for conv types whose forward
    this wrapper cannot reproduce (only ``nn.Conv2d`` with zero padding and timm's ``Conv2dSame``)."""
    conv2d_same_cls, _ = _conv_same()
    paths = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if type(m) not in (nn.Conv2d, conv2d_same_cls) or m.padding_mode != "zeros":
            raise TypeError(f"scale_shift cannot wrap {name} ({type(m).__name__}, padding_mode={m.padding_mode})")
        if not kxk_only or m.kernel_size[0] * m.kernel_size[1] > 1:
            paths.append(name)
    return paths


@ADAPTERS.register("scale_shift")
@ADAPTERS.register("scale_shift-kxk", kxk_only=True)
class ScaleShift(Adapter):
    """Parameters ``scales.<conv path>`` (C_out, C_in/g, 1, 1) and ``shifts.<conv path>`` (C_out,)
    (path dots written as ``/``), in module order."""

    name = "scale_shift"

    def __init__(self, kxk_only: bool = False, shift_bias_free: bool = False):
        super().__init__()
        self.kxk_only, self.shift_bias_free = kxk_only, shift_bias_free
        self.scales = nn.ParameterDict()
        self.shifts = nn.ParameterDict()
        self.paths: list[str] = []

    def attach(self, backbone: nn.Module) -> "ScaleShift":
        model = backbone.model
        self.paths = conv_paths(model, self.kxk_only)
        for path in self.paths:
            parent_path, _, leaf = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            conv = getattr(parent, leaf)
            w = conv.weight
            key = path.replace(".", "/")
            self.scales[key] = nn.Parameter(torch.ones(w.shape[0], w.shape[1], 1, 1, device=w.device))
            if conv.bias is not None or self.shift_bias_free:
                self.shifts[key] = nn.Parameter(torch.zeros(w.shape[0], device=w.device))
            setattr(parent, leaf, ScaleShiftConv(conv, self.scales[key], self.shifts[key] if key in self.shifts else None))
        return self

    def num_scales(self) -> int:
        return sum(p.numel() for p in self.scales.values())

    def num_shifts(self) -> int:
        return sum(p.numel() for p in self.shifts.values())

    def reset(self) -> None:
        with torch.no_grad():
            for p in self.scales.values():
                p.fill_(1.0)
            for p in self.shifts.values():
                p.zero_()
