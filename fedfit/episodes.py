"""FiT's episodic fine-tuning and evaluation of one client's (or one task's) labelled data.

One step: pick a random "way" (between min(min_way, C) and C classes, capped by ``max_way``), split
every chosen class of the support set about 50/50 into context (ceil(n/2): builds the head) and
target (the rest: the loss), cross-entropy of the head's logits on the target, one Adam step on the
adapter (FiLM) and the head's mixing weights. No data augmentation. Adapters with a task phase (CaSE)
open each episode's task from its context images; gradients flow through the context forward.

1-shot: a class with one example cannot be split, so it can only serve as context; when no class has
two examples no step is possible and ``finetune`` returns without training (the head alone is used,
as in FiT).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedfit.model import FewShotModel


@dataclass
class FineTuneConfig:
    steps: int = 40
    lr: float = 0.0035
    weight_decay: float = 0.0
    min_way: int = 5
    max_way: int | None = None       # task size cap (classes per episode)
    seed: int = 0
    prox_mu: float = 0.0             # FedProx: + mu/2 ||w - w_global||^2
    prox_ref: list[torch.Tensor] | None = field(default=None, repr=False)


@dataclass
class FineTuneResult:
    steps: int                       # steps actually taken
    losses: list[float]
    images: int                      # images passed forward+backward
    seconds: float

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    @property
    def mean_loss(self) -> float | None:
        return float(np.mean(self.losses)) if self.losses else None


def split_episode(labels: np.ndarray, rng: np.random.Generator, min_way: int = 5,
                  max_way: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Indices and episode labels (0..way-1) of context and target; None if no class has 2 examples.

    labels: (n,) local labels 0..C-1. Returns (ctx_idx, ctx_y, tgt_idx, tgt_y)."""
    classes = np.unique(labels)
    splittable = [c for c in classes if np.sum(labels == c) >= 2]
    if not splittable:
        return None
    C = len(classes)
    hi = C if max_way is None else min(C, max_way)
    lo = min(min_way, hi)
    way = int(rng.integers(lo, hi + 1))
    # at least one class must supply a target
    chosen = rng.choice(classes, size=way, replace=False)
    if not any(c in splittable for c in chosen):
        chosen[0] = rng.choice(splittable)
    ctx_idx, ctx_y, tgt_idx, tgt_y = [], [], [], []
    for j, c in enumerate(chosen):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = math.ceil(len(idx) / 2)
        ctx_idx.append(idx[:k]); ctx_y.append(np.full(k, j))
        tgt_idx.append(idx[k:]); tgt_y.append(np.full(len(idx) - k, j))
    return (np.concatenate(ctx_idx), np.concatenate(ctx_y), np.concatenate(tgt_idx), np.concatenate(tgt_y))


def finetune(model: FewShotModel, support_x: np.ndarray, support_y: np.ndarray, cfg: FineTuneConfig) -> FineTuneResult:
    """Episodic fine-tuning of the adapter + head on one support set (uint8 (n,S,S,3), labels (n,))."""
    t0 = time.perf_counter()
    params = model.trainable_parameters()
    if cfg.steps <= 0 or not params:
        return FineTuneResult(0, [], 0, time.perf_counter() - t0)
    rng = np.random.default_rng(cfg.seed)
    x_all = model.backbone.preprocess(support_x)
    y_all = np.asarray(support_y)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.adapter.reseed(cfg.seed)  # the adapter's own random choices (dropout) from the same seed
    model.train()
    losses, images = [], 0
    for _ in range(cfg.steps):
        ep = split_episode(y_all, rng, cfg.min_way, cfg.max_way)
        if ep is None:
            break
        ci, cy, ti, ty = ep
        ctx, tgt = model.embed_task(x_all[torch.as_tensor(ci, device=x_all.device)],
                                    x_all[torch.as_tensor(ti, device=x_all.device)])
        dev = ctx.device
        logits = model.head(ctx, torch.as_tensor(cy, device=dev), tgt, int(cy.max()) + 1)
        loss = F.cross_entropy(logits, torch.as_tensor(ty, device=dev))
        total = loss
        if cfg.prox_mu > 0 and cfg.prox_ref is not None:
            total = loss + 0.5 * cfg.prox_mu * sum((p - r).pow(2).sum() for p, r in zip(params, cfg.prox_ref))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(float(loss.detach()))
        images += len(ci) + len(ti)
    model.eval()
    return FineTuneResult(len(losses), losses, images, time.perf_counter() - t0)


@dataclass
class EvalResult:
    accuracy: float                  # Naive Bayes head: fraction of query images classified correctly
    loss: float                      # Naive Bayes head: mean cross-entropy (nats) on the query set
    num_query: int
    extra: dict[str, float] = field(default_factory=dict)  # the adapter's own heads, e.g. accuracy_linear
    support_features: torch.Tensor | None = field(default=None, repr=False)  # (n, d), with features=True
    query_features: torch.Tensor | None = field(default=None, repr=False)    # (m, d)


@torch.no_grad()
def evaluate(model: FewShotModel, support_x: np.ndarray, support_y: np.ndarray,
             query_x: np.ndarray, query_y: np.ndarray, seed: int = 0, features: bool = False) -> EvalResult:
    """Head from the whole support set under the current adapter (and the task opened from the whole
    support set), scored on the query set; ``extra`` holds the adapter's extra metrics
    (``Adapter.extra_eval``; ``seed`` drives its random choices, e.g. UpperCaSE's minibatches). With
    ``features`` the result keeps the support and query features (one embedding pass serves all)."""
    model.eval()
    with model.task(support_x) as s:  # CaSE: support features come from the task's own forward
        s = model.embed_images(support_x) if s is None else s
        q = model.embed_images(query_x)
    dev = s.device
    C = int(np.max(support_y)) + 1
    sy, y = torch.as_tensor(support_y, device=dev), torch.as_tensor(query_y, device=dev)
    logits = model.head(s, sy, q, C)
    extra = model.adapter.extra_eval(s, sy, q, y, C, seed=seed)
    return EvalResult(float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y)), len(query_y),
                      extra, s if features else None, q if features else None)
