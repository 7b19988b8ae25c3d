"""ICIIA: intra-client and inter-image attention (arXiv 2211.06276; github.com/mikudehuane/ICIIA,
``code/model/attention/``), on pooled frozen-backbone features before the head.

Layer (the reference's ``PartitionedTransformerEncoderLayerEfficient``): a post-norm transformer
encoder layer over features of dimension D,

    x = LayerNorm(x + Dropout(MHA(x)));   x = LayerNorm(x + Dropout(FF(x))),
    FF(x) = Linear2(Dropout(ReLU(Linear1(x)))),  Linear1, Linear2: D -> D (the reference's width),

4 heads (each a contiguous D/4 slice of q, k, v, as in ``nn.MultiheadAttention``), dropout 0.1 on the
attention weights and the three places above (training only), LayerNorm eps 1e-5. Every projection
(q/k/v, attention output, Linear1, Linear2) is PARTITIONED (``PartitionedLinear``): with P partitions
the weight is (P, out/P, in/P); partition p maps input chunk x[p*in/P:(p+1)*in/P] to out/P outputs
and output o of partition p lands at index o*P + p (the interleaving "shuffle" that lets every
attention head see every partition). P = 1 is ICIIA-B (plain Linear layers), the paper's ICIIA-T uses
P = 256. ``layers`` 1-3 such layers, each its own weights.

What the attention sees (our choice, documented): the client's history features h_1..h_n (its own
unlabelled earlier images, frozen-backbone features, PERSONAL state) are a fixed memory. For every
target image i the layer sees the sequence [h_1, ..., h_n, x_i] (no positional encoding, no other
target): history rows attend over the history only, the target row over all n history rows and
itself. With one layer this is exactly the reference's single sequence (n + 1, 1, D) with no mask
for each target on its own; with more layers, history rows do not see the target (in the reference
they would, and a target's feature would depend on which other targets share its sequence). So a
calibrated feature depends on its own image and the history only, never on the batch it came in;
every image that reaches the head (support and query alike) is a target. With no history (n = 0) a
target attends to itself only.

Initialisation. The reference's: xavier-uniform q/k/v and output weights per partition, zero biases;
kaiming-uniform (a = sqrt 5) Linear1 / Linear2 per partition, uniform biases; LayerNorm weight 1 bias
0. ``zero_init=True`` (default) also zeroes the weights and biases of the attention output and of
Linear2, so both residual branches start at 0 and the layer starts as LayerNorm(LayerNorm(x)):
a per-image standardization of the backbone feature, independent of the history (measured effect on
the frozen head in tests/test_adapters.py and the commit message). Attention weights are SHARED
state; every random choice (init: ``seed``; dropout: ``reseed``) comes from a seeded generator.

Default P = 256 (the paper's ICIIA-T): on Lite0 (D = 1280) each partition is 5 features and a layer has
51,200 parameters (204,800 bytes fp32), 2.5x FiLM's 20,544; P = 1 would be 9.84M per layer, three
times the whole backbone, far too much to send every round and to fit on ~25 support images.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedfit.adapters.base import ADAPTERS, Adapter, check_arrays, to_arrays


class PartitionedLinear(nn.Module):
    """Block-diagonal linear map with interleaved outputs: x (..., in) -> (..., out).

    weight (P, out/P, in/P), bias (out,): y[..., o*P + p] = sum_i weight[p, o, i] * x[..., p*in/P + i]
    + bias[o*P + p]. P = 1: an ordinary ``nn.Linear`` with weight ``weight[0]``."""

    def __init__(self, in_features: int, out_features: int, partitions: int):
        super().__init__()
        if in_features % partitions or out_features % partitions:
            raise ValueError(f"partitions={partitions} must divide {in_features} and {out_features}")
        self.in_features, self.out_features, self.partitions = in_features, out_features, partitions
        self.weight = nn.Parameter(torch.empty(partitions, out_features // partitions, in_features // partitions))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        P = self.partitions
        xp = x.reshape(*x.shape[:-1], P, self.in_features // P)           # (..., P, in/P)
        y = torch.einsum("...pi,poi->...op", xp, self.weight)             # (..., out/P, P)
        return y.reshape(*x.shape[:-1], self.out_features) + self.bias

    def init_(self, kind: str, gen: torch.Generator) -> None:
        """``xavier``: xavier-uniform weights, zero bias; ``kaiming``: nn.Linear's default (kaiming-uniform
        a = sqrt 5 and uniform bias +- 1/sqrt(fan_in)); ``zero``: zeros. Per partition, as the reference."""
        P, o, i = self.weight.shape
        with torch.no_grad():
            if kind == "zero":
                self.weight.zero_()
                self.bias.zero_()
                return
            bound = math.sqrt(6.0 / (i + o)) if kind == "xavier" else 1.0 / math.sqrt(i)
            self.weight.copy_(torch.rand(P, o, i, generator=gen) * (2 * bound) - bound)
            if kind == "xavier":
                self.bias.zero_()
            else:
                self.bias.copy_(torch.rand(self.out_features, generator=gen) * (2 / math.sqrt(i)) - 1 / math.sqrt(i))


def _dropout(x: torch.Tensor, p: float, active: bool, gen: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout whose mask comes from ``gen`` (never torch's global generator)."""
    if not active or p <= 0:
        return x
    keep = torch.rand(x.shape, generator=gen, device=x.device) >= p
    return x * keep / (1.0 - p)


class MemoryAttention(nn.Module):
    """Partitioned multi-head self-attention of targets over a fixed memory (the history).

    ``forward(mem (n, D), tgt (B, D))`` -> (mem_out (n, D), tgt_out (B, D)): memory rows attend over
    the memory; target row i over [memory; tgt_i]. Heads split q/k/v into contiguous D/heads slices."""

    def __init__(self, dim: int, heads: int, partitions: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide the feature dimension {dim}")
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.in_proj = PartitionedLinear(dim, 3 * dim, partitions)
        self.out_proj = PartitionedLinear(dim, dim, partitions)
        self.gen: torch.Generator | None = None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.heads, self.dim // self.heads).transpose(0, 1)  # (H, N, D/H)

    def _drop(self, w: torch.Tensor) -> torch.Tensor:
        return _dropout(w, self.dropout, self.training, self.gen)

    def forward(self, mem: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = 1.0 / math.sqrt(self.dim // self.heads)
        qt, kt, vt = (self._split(t) for t in self.in_proj(tgt).chunk(3, dim=-1))   # (H, B, D/H)
        self_score = (qt * kt).sum(-1, keepdim=True) * scale                          # (H, B, 1)
        if mem.shape[0] == 0:
            w = self._drop(torch.softmax(self_score, dim=-1))
            out_t, out_m = w * vt, mem
        else:
            qm, km, vm = (self._split(t) for t in self.in_proj(mem).chunk(3, dim=-1))  # (H, n, D/H)
            wm = self._drop(torch.softmax(qm @ km.transpose(1, 2) * scale, dim=-1))   # (H, n, n)
            out_m = self._merge(wm @ vm)
            w = self._drop(torch.softmax(torch.cat([qt @ km.transpose(1, 2) * scale, self_score], -1), dim=-1))
            out_t = w[..., :-1] @ vm + w[..., -1:] * vt                                 # (H, B, D/H)
        out_m = self.out_proj(out_m) if mem.shape[0] else mem
        return out_m, self.out_proj(self._merge(out_t))

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).reshape(x.shape[1], self.dim)


class EncoderLayer(nn.Module):
    """Post-norm encoder layer over (memory, targets); see the module docstring."""

    def __init__(self, dim: int, heads: int, partitions: int, dropout: float):
        super().__init__()
        self.attn = MemoryAttention(dim, heads, partitions, dropout)
        self.linear1 = PartitionedLinear(dim, dim, partitions)
        self.linear2 = PartitionedLinear(dim, dim, partitions)
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-5), nn.LayerNorm(dim, eps=1e-5)
        self.dropout = dropout

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return _dropout(x, self.dropout, self.training, self.attn.gen)

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self._drop(self.linear2(self._drop(F.relu(self.linear1(x)))))

    def forward(self, mem: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        am, at = self.attn(mem, tgt)
        tgt = self.norm1(tgt + self._drop(at))
        tgt = self.norm2(tgt + self._ff(tgt))
        if mem.shape[0]:
            mem = self.norm1(mem + self._drop(am))
            mem = self.norm2(mem + self._ff(mem))
        return mem, tgt

    def init_(self, gen: torch.Generator, zero_init: bool) -> None:
        self.attn.in_proj.init_("xavier", gen)
        self.attn.out_proj.init_("zero" if zero_init else "xavier", gen)
        self.linear1.init_("kaiming", gen)
        self.linear2.init_("zero" if zero_init else "kaiming", gen)
        for n in (self.norm1, self.norm2):
            nn.init.ones_(n.weight)
            nn.init.zeros_(n.bias)


@ADAPTERS.register("iciia")
class ICIIA(Adapter):
    """Attention weights (``layers.<i>.…``) are SHARED; the history features ``history`` (h, D) are
    PERSONAL (set by ``FewShotModel.set_history``)."""

    name = "iciia"
    config_options = {"partitions": "iciia_partitions"}
    uses_history = True
    keeps_personal = True    # the history features

    def __init__(self, partitions: int = 256, layers: int = 1, heads: int = 4, dropout: float = 0.1,
                 zero_init: bool = True, seed: int = 0):
        super().__init__()
        if not 1 <= layers <= 3:
            raise ValueError(f"ICIIA layers must be 1..3, not {layers}")
        self.partitions, self.num_layers, self.heads, self.dropout = partitions, layers, heads, dropout
        self.zero_init, self.seed = zero_init, seed
        self.layers = nn.ModuleList()
        self.dim = 0
        self._history: torch.Tensor | None = None  # personal (a plain tensor, not a parameter)

    def attach(self, backbone: nn.Module) -> "ICIIA":
        self.dim = int(backbone.feature_dim)
        if self.dim % self.partitions:
            divisors = [p for p in range(1, self.dim + 1) if self.dim % p == 0]
            raise ValueError(f"ICIIA partitions={self.partitions} must divide the feature dimension "
                             f"{self.dim}; choose one of {divisors}")
        device = next(backbone.model.parameters()).device
        self.layers.extend(EncoderLayer(self.dim, self.heads, self.partitions, self.dropout)
                           for _ in range(self.num_layers))
        self.to(device)
        self.reset()
        return self

    def reset(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        for layer in self.layers:
            layer.init_(gen, self.zero_init)

    def reseed(self, seed: int) -> None:
        dev = next(self.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        for layer in self.layers:
            layer.attn.gen = gen

    def calibrate(self, feats: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, D) -> calibrated features (B, D): each row attends over the history."""
        mem = self._history if self._history is not None else feats.new_zeros(0, self.dim)
        mem = mem.to(feats.device, feats.dtype)
        for layer in self.layers:
            if self.training and layer.attn.gen is None:
                self.reseed(0)
            mem, feats = layer(mem, feats)
        return feats

    # ---------------------------------------------------------------- personal state: the history

    def set_history(self, feats: torch.Tensor) -> None:
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"ICIIA history features must be (h, {self.dim}), got {tuple(feats.shape)}")
        self._history = feats.detach().float().clone()

    def personal_state_arrays(self) -> "OrderedDict[str, np.ndarray]":
        return to_arrays([("history", self._history)] if self._history is not None else [])

    def load_personal_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.reset_personal()
        if not arrays:
            return
        check_arrays("ICIIA personal state", arrays, {"history": None})
        self.set_history(torch.as_tensor(np.asarray(arrays["history"], dtype=np.float32),
                                         device=next(self.parameters()).device))

    def reset_personal(self) -> None:
        self._history = None
