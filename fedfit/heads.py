"""Naive Bayes heads over backbone features (FiT): ``qda``, ``lda``, ``protonets``.

Given context features (n, d) with labels in 0..C-1 the head estimates class means mu_c and
covariances, then scores target features (m, d) with class log-likelihoods (m, C) used as logits:

* QDA: ``Sigma_c = relu(e1) * Sigma_class_c + relu(e2) * Sigma_task + relu(e3) * I``, e starts (0.5, 0.5, 1)
* LDA: ``Sigma = relu(e2) * Sigma_task + relu(e3) * I`` (shared), e starts (1, 1)
* ProtoNets: ``-||f - mu_c||^2 / temperature`` (FiT's is temperature 1; see ``ProtoNets``)

Covariances use the unbiased estimator (a class with a single example has a zero class covariance).
The identity weight is floored at ``MIN_IDENTITY_WEIGHT`` so every covariance stays positive definite.
With fewer context images than feature dimensions (the few-shot case: ~25 images, d = 1280) the
covariances are "identity + low rank" and log-densities use the Woodbury identity on k x k matrices;
otherwise a batched d x d Cholesky factor. Either way a Cholesky that fails numerically is retried
with growing diagonal jitter. Works on CPU and CUDA.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedfit.registry import Registry

HEADS: Registry["Head"] = Registry("head")


@dataclass
class ClassStats:
    """Additive sufficient statistics of features per class (they sum across clients).

    count: (C,) examples; total: (C, d) feature sums; scatter: optional (d, d) sum of f f^T over all
    examples (what a shared covariance needs: d*d floats, 6.5 MB in fp32 at d = 1280).
    """

    count: torch.Tensor
    total: torch.Tensor
    scatter: torch.Tensor | None = None

    @classmethod
    def of(cls, feats: torch.Tensor, labels: torch.Tensor, num_classes: int, scatter: bool = False) -> "ClassStats":
        onehot = F.one_hot(labels, num_classes).to(feats.dtype)  # (n, C)
        return cls(onehot.sum(0), onehot.T @ feats, feats.T @ feats if scatter else None)

    def __add__(self, other: "ClassStats") -> "ClassStats":
        sc = None if self.scatter is None or other.scatter is None else self.scatter + other.scatter
        return ClassStats(self.count + other.count, self.total + other.total, sc)

    def means(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1)[:, None]


def _cov(x: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance (d, d) of rows of x (n, d); zeros when n < 2."""
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(x.shape[1], x.shape[1])
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / (n - 1)


def cholesky_safe(a: torch.Tensor, max_tries: int = 6) -> torch.Tensor:
    """Lower Cholesky factor of a batch of symmetric matrices (..., d, d); adds jitter 1e-6, 1e-5...
    times the mean diagonal to the failing ones; raises ValueError if it still fails."""
    a = 0.5 * (a + a.transpose(-1, -2))
    L, info = torch.linalg.cholesky_ex(a)
    if not bool((info > 0).any()):
        return L
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    scale = a.diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp_min(1e-12)[..., None, None]
    for k in range(max_tries):
        L, info = torch.linalg.cholesky_ex(a + (10.0 ** (k - 6)) * scale * eye)
        if not bool((info > 0).any()):
            return L
    raise ValueError("covariance is not positive definite even with jitter (non-finite features?)")


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """log N(x | mean_c, L_c L_c^T) for x (m, d), mean (C, d), chol (C, d, d) or (d, d) -> (m, C)."""
    d = x.shape[-1]
    diff = (x[None, :, :] - mean[:, None, :]).transpose(-1, -2)  # (C, d, m)
    L = chol if chol.ndim == 3 else chol.expand(mean.shape[0], d, d)
    z = torch.linalg.solve_triangular(L, diff, upper=False)  # (C, d, m)
    maha = z.pow(2).sum(-2)  # (C, m)
    logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (C,)
    return (-0.5 * (d * math.log(2 * math.pi) + logdet[:, None] + maha)).T


def lowrank_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, U: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log N(x | mean_c, b I + U_c U_c^T) without forming d x d matrices (Woodbury identity).

    x (m, d), mean (C, d), U (C, d, k) or (d, k) with k << d, b > 0 scalar -> (m, C). Costs
    O(C m d k + C k^3) instead of O(C d^3): with d = 1280 features and k ~ 25 context images it is
    what makes a QDA / LDA training step as cheap as a ProtoNets one."""
    d = x.shape[-1]
    if U.ndim == 2:
        U = U.expand(mean.shape[0], *U.shape)
    k = U.shape[-1]
    v = x[None, :, :] - mean[:, None, :]                                     # (C, m, d)
    w = v @ U                                                                # (C, m, k)
    cap = U.transpose(-1, -2) @ U + b * torch.eye(k, dtype=x.dtype, device=x.device)  # (C, k, k)
    L = cholesky_safe(cap)
    z = torch.linalg.solve_triangular(L, w.transpose(-1, -2), upper=False)  # (C, k, m)
    quad = (v.pow(2).sum(-1) - z.pow(2).sum(-2)) / b                        # (C, m)
    logdet = (d - k) * torch.log(b) + 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (C,)
    return (-0.5 * (d * math.log(2 * math.pi) + logdet[:, None] + quad)).T


def _centered_factor(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """U (d, n) with U U^T = weight * unbiased covariance of the rows of x (n, d); zeros when n < 2."""
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(x.shape[1], 1)
    return (x - x.mean(0, keepdim=True)).T * torch.sqrt(weight / (n - 1))


MIN_IDENTITY_WEIGHT = 1e-4  # keeps b I positive definite when relu(e_identity) reaches 0


class Head(nn.Module):
    """``forward(context_feats (n,d), context_labels (n,), target_feats (m,d), num_classes) -> logits (m, C)``."""

    name = "head"
    initial_e: tuple[float, ...] = ()

    def forward(self, ctx: torch.Tensor, ctx_y: torch.Tensor, tgt: torch.Tensor, num_classes: int) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        """Mixing weights back to their initial values (no-op for heads without parameters)."""
        if self.initial_e:
            with torch.no_grad():
                self.e.copy_(torch.tensor(self.initial_e))


TEMPERATURES = ("task", "dim")  # ProtoNets' named temperatures (beside a number)


@HEADS.register("protonets")
class ProtoNets(Head):
    """logits = -||f - mu_c||^2 / temperature.

    * a number: fixed; ``1`` is FiT's definition (raw squared distances).
    * ``"dim"``: the feature dimension d (logits O(1) when features have O(1) per-dimension spread).
    * ``"task"``: the context features' mean squared distance to their mean, computed with gradients
      (the task's spread): the logits do not change when every feature is scaled, so fine-tuning cannot
      lower the loss by inflating the features through FiLM - which it otherwise does whenever a fixed
      temperature leaves the softmax soft (measured: 15x feature norms and falling accuracy over 10
      federated 2-way rounds on Fashion-MNIST 32 px with ``"dim"``). Needs >= 2 context images."""

    name = "protonets"

    def __init__(self, temperature: float | str = 1.0):
        super().__init__()
        if isinstance(temperature, str) and temperature not in TEMPERATURES:
            raise ValueError(f"temperature must be a number or one of {TEMPERATURES}, got {temperature!r}")
        self.temperature = temperature

    def forward(self, ctx, ctx_y, tgt, num_classes):
        mu = ClassStats.of(ctx, ctx_y, num_classes).means()
        if self.temperature == "task":
            t = (ctx - ctx.mean(0, keepdim=True)).pow(2).sum(1).mean().clamp_min(1e-12)
        else:
            t = float(tgt.shape[-1]) if self.temperature == "dim" else float(self.temperature)
        return -torch.cdist(tgt, mu).pow(2) / t


@HEADS.register("lda")
class LDA(Head):
    name = "lda"
    initial_e = (1.0, 1.0)  # (task, identity)

    def __init__(self):
        super().__init__()
        self.e = nn.Parameter(torch.tensor(self.initial_e))

    def forward(self, ctx, ctx_y, tgt, num_classes):
        mu = ClassStats.of(ctx, ctx_y, num_classes).means()
        e = F.relu(self.e)
        n, d = ctx.shape
        if n < d:  # low rank + identity: Woodbury
            return lowrank_gaussian_log_prob(tgt, mu, _centered_factor(ctx, e[0]), e[1] + MIN_IDENTITY_WEIGHT)
        eye = torch.eye(d, dtype=ctx.dtype, device=ctx.device)
        return gaussian_log_prob(tgt, mu, cholesky_safe(e[0] * _cov(ctx) + (e[1] + MIN_IDENTITY_WEIGHT) * eye))


@HEADS.register("qda")
class QDA(Head):
    name = "qda"
    initial_e = (0.5, 0.5, 1.0)  # (class, task, identity)

    def __init__(self):
        super().__init__()
        self.e = nn.Parameter(torch.tensor(self.initial_e))

    def forward(self, ctx, ctx_y, tgt, num_classes):
        mu = ClassStats.of(ctx, ctx_y, num_classes).means()
        e = F.relu(self.e)
        n, d = ctx.shape
        b = e[2] + MIN_IDENTITY_WEIGHT
        if 2 * n < d:  # per class: [class factor | task factor], still rank << d
            task = _centered_factor(ctx, e[1])
            per_class = [_centered_factor(ctx[ctx_y == c], e[0]) for c in range(num_classes)]
            k = max(u.shape[1] for u in per_class)
            U = torch.stack([torch.cat([F.pad(u, (0, k - u.shape[1])), task], 1) for u in per_class])
            return lowrank_gaussian_log_prob(tgt, mu, U, b)
        eye = torch.eye(d, dtype=ctx.dtype, device=ctx.device)
        shared = e[1] * _cov(ctx) + b * eye
        cls_cov = torch.stack([_cov(ctx[ctx_y == c]) for c in range(num_classes)])
        return gaussian_log_prob(tgt, mu, cholesky_safe(e[0] * cls_cov + shared))



def fit_linear_head(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 500,
                    batch: int = 128, rng: np.random.Generator | None = None, w0: torch.Tensor | None = None,
                    b0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """UpperCaSE's linear head on fixed features (n, d) with labels 0..C-1: Adam with weight decay 1e-5,
    lr linear from 1e-3 to 1e-5 over ``steps``, minibatches of ``batch`` drawn with replacement,
    starting from zeros (or ``w0`` (C, d), ``b0`` (C,)). Returns detached (weight (C, d), bias (C,))."""
    rng = rng if rng is not None else np.random.default_rng(0)
    dev = feats.device
    w = (torch.zeros(num_classes, feats.shape[1]) if w0 is None else w0).to(dev, torch.float32).clone()
    b = (torch.zeros(num_classes) if b0 is None else b0).to(dev, torch.float32).clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    x, y = feats.detach().float(), labels.to(dev)
    with torch.enable_grad():
        opt = torch.optim.Adam([w, b], lr=1e-3, weight_decay=1e-5)
        for lr in np.linspace(1e-3, 1e-5, steps):
            idx = torch.as_tensor(rng.integers(0, len(x), batch), device=dev)
            for group in opt.param_groups:
                group["lr"] = float(lr)
            loss = F.cross_entropy(x[idx] @ w.T + b, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return w.detach(), b.detach()


AUTO_RULE = ("fewer than 50 shots per class: lda (measured on OpenClipart, 5-way, 30 tasks: best or tied "
             "frozen head at 1, 5 and 10 shots - 44.7 / 68.2 / 75.7% vs ProtoNets 40.1 / 68.5 / 72.9% and QDA "
             "44.7 / 67.3 / 70.5%); 50 or more: qda (a per-class covariance needs many examples, as in FiT's "
             "VTAB-1k setting)")


def auto_head(min_shots: int) -> str:
    """The head ``auto`` picks for a support set whose smallest class has ``min_shots`` examples
    (rule and evidence in ``AUTO_RULE``)."""
    return "lda" if min_shots < 50 else "qda"


def create_head(name: str, min_shots: int | None = None, **kwargs) -> Head:
    """``name`` in ``HEADS`` or ``"auto"`` (needs ``min_shots``; rule in ``AUTO_RULE``)."""
    if name == "auto":
        if min_shots is None:
            raise ValueError("head 'auto' needs the number of shots")
        name = auto_head(min_shots)
    return HEADS.create(name, **kwargs)
