"""FiT's episodic fine-tuning and evaluation of one client's (or one task's) labelled data.

One step: pick a random "way" (between min(min_way, C) and C classes, capped by ``max_way``), take the
chosen classes' context images (build the head) and target images (the loss), cross-entropy of the
head's logits on the target, one Adam step on the adapter (FiLM) and the head's mixing weights. No data
augmentation. Adapters with a task phase (CaSE) open each episode's task from its context images;
gradients flow through the context forward.

Where context and target come from (``FineTuneConfig.split``):
  * ``"step"``: every step splits each chosen class afresh, about 50/50 (ceil(n/2) context);
  * ``"round"``: FiT's ``TaskResampler``: the support set is split once per call (once per client and
    round in federated training), every step uses all context and target images of its chosen classes.
``PooledEpisodes`` draws client-sized tasks from many clients' pooled support sets (the budget-matched
centralized upper bound); ``FitTasks`` FiT's own oracle's larger tasks over the pool.

Objectives (``FineTuneConfig.objective``): ``"head"``, FiT's: the Naive Bayes head's loss;
``"uppercase"``, UpperCaSE's meta-training step (models/uppercase.py ``learn`` in the reference): a linear
head is fitted from zero on the context features (no gradients; ``heads.fit_linear_head``), then the
adapter is updated by that fixed head's loss on the context and target images together, with the task
opened from that same batch (CaSE's adaptive mode).

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

from fedfit.heads import fit_linear_head
from fedfit.model import FewShotModel

SPLITS = ("step", "round")
OBJECTIVES = ("head", "uppercase")
PREPROCESS_ALL_MAX = 2048  # support sets up to this many images are normalized once; larger ones per step


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
    split: str = "step"              # "step" | "round" (see module docstring)
    objective: str = "head"          # "head" | "uppercase"
    linear_steps: int = 500          # uppercase: Adam steps of the linear head per task
    accumulate: int = 1              # tasks per Adam step (their gradients averaged; see ``finetune``)


@dataclass
class FineTuneResult:
    steps: int                       # tasks (episodes) actually trained on, one loss each
    losses: list[float]
    images: int                      # images passed forward+backward
    seconds: float
    updates: int = 0                 # Adam steps taken (= steps unless ``accumulate`` > 1)

    @property
    def mean_loss(self) -> float | None:
        return float(np.mean(self.losses)) if self.losses else None


Episode = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (ctx_idx, ctx_y, tgt_idx, tgt_y)


def _way(classes: np.ndarray, rng: np.random.Generator, min_way: int, max_way: int | None) -> int:
    hi = len(classes) if max_way is None else min(len(classes), max_way)
    return int(rng.integers(min(min_way, hi), hi + 1))


def _choose(classes, splittable, rng, min_way, max_way) -> np.ndarray:
    """``way`` distinct classes, at least one of them ``splittable`` (able to give a target)."""
    chosen = rng.choice(classes, size=_way(classes, rng, min_way, max_way), replace=False)
    if not any(c in splittable for c in chosen):
        chosen[0] = rng.choice(splittable)
    return chosen


def split_episode(labels: np.ndarray, rng: np.random.Generator, min_way: int = 5,
                  max_way: int | None = None) -> Episode | None:
    """Indices and episode labels (0..way-1) of context and target, split afresh; None if no class has
    2 examples. labels: (n,) local labels 0..C-1. Returns (ctx_idx, ctx_y, tgt_idx, tgt_y)."""
    classes = np.unique(labels)
    splittable = [c for c in classes if np.sum(labels == c) >= 2]
    if not splittable:
        return None
    chosen = _choose(classes, splittable, rng, min_way, max_way)
    return _halves([rng.permutation(np.flatnonzero(labels == c)) for c in chosen])


def _halves(per_class: list[np.ndarray]) -> Episode:
    """Each class's indices split ceil(n/2) context / rest target; episode labels 0..len-1."""
    ctx_idx, ctx_y, tgt_idx, tgt_y = [], [], [], []
    for j, idx in enumerate(per_class):
        k = math.ceil(len(idx) / 2)
        ctx_idx.append(idx[:k]); ctx_y.append(np.full(k, j))
        tgt_idx.append(idx[k:]); tgt_y.append(np.full(len(idx) - k, j))
    return (np.concatenate(ctx_idx), np.concatenate(ctx_y), np.concatenate(tgt_idx), np.concatenate(tgt_y))


class ClientTasks:
    """The federation's tasks over a pool (``central_tasks = "client"``): each step picks one client
    uniformly and draws the episode that client's own fine-tuning would draw (``episode_sampler`` over its
    images only: its classes, its shots, ``cfg``'s way and split), so no task contrasts classes of different
    clients. ``owners`` (N,): the client of each pooled image; episode indices are into the whole pool."""

    def __init__(self, labels: np.ndarray, owners: np.ndarray, cfg: FineTuneConfig, rng: np.random.Generator):
        self.members = [np.flatnonzero(owners == o) for o in np.unique(owners)]
        self.samplers = [episode_sampler(labels[m], cfg, rng) for m in self.members]

    def __call__(self, rng: np.random.Generator) -> Episode | None:
        for i in rng.permutation(len(self.members)):  # a client with no splittable class gives no task
            if (ep := self.samplers[i](rng)) is not None:
                ctx_idx, ctx_y, tgt_idx, tgt_y = ep
                return self.members[i][ctx_idx], ctx_y, self.members[i][tgt_idx], tgt_y
        return None


class FixedSplit:
    """FiT's ``TaskResampler``: each class split once (a random ceil(n/2) context, the rest target); every
    episode takes all context and target images of ``way`` random classes."""

    def __init__(self, labels: np.ndarray, rng: np.random.Generator, min_way: int = 5, max_way: int | None = None):
        self.classes = np.unique(labels)
        self.parts = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in self.classes}
        self.splittable = [c for c in self.classes if len(self.parts[int(c)]) >= 2]
        self.min_way, self.max_way = min_way, max_way

    def __call__(self, rng: np.random.Generator) -> Episode | None:
        if not self.splittable:
            return None
        chosen = _choose(self.classes, self.splittable, rng, self.min_way, self.max_way)
        return _halves([self.parts[int(c)] for c in chosen])


class FitTasks:
    """FiT's ``TaskResampler`` over a pooled labelled set (its centralized oracle, ``central_tasks = fit``):
    every class split once (ceil(n/2) context, the rest target); each task draws ``way`` classes between
    min(``min_way``, K) and min(K, ``context_max``), takes min(context size, round(context_max / way))
    random context images and min(target size, target_max // way) random target images of each."""

    def __init__(self, labels: np.ndarray, rng: np.random.Generator, min_way: int = 5, context_max: int = 200,
                 target_max: int = 2000):
        self.split = FixedSplit(labels, rng, min_way)
        self.context_max, self.target_max = context_max, target_max

    def __call__(self, rng: np.random.Generator) -> Episode | None:
        s = self.split
        if not s.splittable:
            return None
        hi = min(len(s.classes), self.context_max)
        chosen = _choose(s.classes, s.splittable, rng, s.min_way, hi)
        way = len(chosen)
        n_ctx, n_tgt = max(round(self.context_max / way), 1), max(self.target_max // way, 1)
        ctx_idx, ctx_y, tgt_idx, tgt_y = [], [], [], []
        for j, c in enumerate(chosen):
            part = s.parts[int(c)]
            k = math.ceil(len(part) / 2)
            a, b = rng.permutation(part[:k])[:n_ctx], rng.permutation(part[k:])[:n_tgt]
            ctx_idx.append(a); ctx_y.append(np.full(len(a), j))
            tgt_idx.append(b); tgt_y.append(np.full(len(b), j))
        return (np.concatenate(ctx_idx), np.concatenate(ctx_y), np.concatenate(tgt_idx), np.concatenate(tgt_y))


class PooledEpisodes:
    """Client-sized tasks from a pooled labelled set (many clients' support sets, global labels): ``way``
    classes of the pool (between min(min_way, K) and ``max_way``), ``shots`` random images of each (all
    when a class has fewer), split about 50/50 afresh every step; with ``split = "round"`` the pool is
    split once (per call) and each episode draws ceil(shots/2) context and the rest target images per
    class from the fixed halves."""

    def __init__(self, labels: np.ndarray, shots: int, rng: np.random.Generator, min_way: int = 5,
                 max_way: int | None = None, split: str = "step"):
        self.shots, self.min_way, self.max_way, self.split = shots, min_way, max_way, split
        self.classes = np.unique(labels)
        self.members = {int(c): np.flatnonzero(labels == c) for c in self.classes}
        self.splittable = [c for c in self.classes if len(self.members[int(c)]) >= 2]
        if split == "round":
            halves = {c: rng.permutation(m) for c, m in self.members.items()}
            self.fixed = {c: (h[:math.ceil(len(h) / 2)], h[math.ceil(len(h) / 2):]) for c, h in halves.items()}

    def __call__(self, rng: np.random.Generator) -> Episode | None:
        if not self.splittable:
            return None
        chosen = _choose(self.classes, self.splittable, rng, self.min_way, self.max_way)
        if self.split == "step":
            return _halves([rng.permutation(self.members[int(c)])[:self.shots] for c in chosen])
        kc = math.ceil(self.shots / 2)
        ctx_idx, ctx_y, tgt_idx, tgt_y = [], [], [], []
        for j, c in enumerate(chosen):
            ctx, tgt = self.fixed[int(c)]
            a = rng.permutation(ctx)[:kc]
            b = rng.permutation(tgt)[:self.shots - kc]
            ctx_idx.append(a); ctx_y.append(np.full(len(a), j))
            tgt_idx.append(b); tgt_y.append(np.full(len(b), j))
        return (np.concatenate(ctx_idx), np.concatenate(ctx_y), np.concatenate(tgt_idx), np.concatenate(tgt_y))


def episode_sampler(labels: np.ndarray, cfg: FineTuneConfig, rng: np.random.Generator):
    """The sampler ``cfg.split`` asks for over one support set's labels: ``rng -> Episode | None``."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    if cfg.split == "round":
        return FixedSplit(labels, rng, cfg.min_way, cfg.max_way)
    return lambda r: split_episode(labels, r, cfg.min_way, cfg.max_way)


def finetune(model: FewShotModel, support_x: np.ndarray, support_y: np.ndarray, cfg: FineTuneConfig,
             sampler=None) -> FineTuneResult:
    """Episodic fine-tuning of the adapter + head on one support set (uint8 (n,S,S,3), labels (n,)).
    ``sampler``: ``rng -> Episode | None`` over ``support_y`` (default: the one ``cfg.split`` names).

    ``cfg.steps`` counts TASKS (a forward + backward each: what ``images`` and the compute budget
    count). Each group of ``cfg.accumulate`` consecutive tasks makes ONE Adam step on the MEAN of their
    gradients (every task sees the parameters of the group's start); the last group may be smaller
    (steps = 10, accumulate = 16: one step on 10 tasks). UpperCaSE's reference sums 16 tasks'
    gradients instead: for Adam the same step up to its eps (1e-8) and, with ``weight_decay`` > 0, the
    decay's weight against the gradient (the mean keeps it as with one task; UpperCaSE has none)."""
    t0 = time.perf_counter()
    params = model.trainable_parameters()
    if cfg.steps <= 0 or not params:
        return FineTuneResult(0, [], 0, time.perf_counter() - t0)
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
    if cfg.accumulate < 1:
        raise ValueError(f"accumulate must be >= 1 task per step, got {cfg.accumulate}")
    rng = np.random.default_rng(cfg.seed)
    y_all = np.asarray(support_y)
    sampler = sampler or episode_sampler(y_all, cfg, rng)
    small = len(support_x) <= PREPROCESS_ALL_MAX
    x_all = model.backbone.preprocess(support_x) if small else None

    def images(idx: np.ndarray) -> torch.Tensor:
        if small:
            return x_all[torch.as_tensor(idx, device=x_all.device)]
        return model.backbone.preprocess(np.asarray(support_x[idx]))

    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.adapter.reseed(cfg.seed)  # the adapter's own random choices (dropout) from the same seed
    model.train()
    losses, images_seen, updates, pending = [], 0, 0, 0
    for i in range(cfg.steps):
        ep = sampler(rng)
        if ep is None:
            break
        ci, cy, ti, ty = ep
        if cfg.objective == "uppercase":
            loss = _uppercase_loss(model, images(ci), cy, images(ti), ty, cfg.linear_steps, rng)
        else:
            ctx, tgt = model.embed_task(images(ci), images(ti))
            dev = ctx.device
            logits = model.head(ctx, torch.as_tensor(cy, device=dev), tgt, int(cy.max()) + 1)
            loss = F.cross_entropy(logits, torch.as_tensor(ty, device=dev))
        total = loss
        if cfg.prox_mu > 0 and cfg.prox_ref is not None:
            total = loss + 0.5 * cfg.prox_mu * sum((p - r).pow(2).sum() for p, r in zip(params, cfg.prox_ref))
        if pending == 0:
            opt.zero_grad(set_to_none=True)
        total.backward()  # summed into .grad over the group
        pending += 1
        losses.append(float(loss.detach()))
        images_seen += len(ci) + len(ti)
        if pending == cfg.accumulate or i == cfg.steps - 1:
            _mean_step(opt, params, pending)
            updates, pending = updates + 1, 0
    if pending:  # the sampler ran dry inside a group
        _mean_step(opt, params, pending)
        updates += 1
    model.eval()
    return FineTuneResult(len(losses), losses, images_seen, time.perf_counter() - t0, updates)


def _mean_step(opt: torch.optim.Optimizer, params: list[torch.Tensor], tasks: int) -> None:
    """One optimizer step on the mean of ``tasks`` tasks' gradients (summed in ``.grad``)."""
    if tasks > 1:
        for p in params:
            if p.grad is not None:
                p.grad.div_(tasks)
    opt.step()


def _uppercase_loss(model: FewShotModel, ctx: torch.Tensor, cy: np.ndarray, tgt: torch.Tensor, ty: np.ndarray,
                    linear_steps: int, rng: np.random.Generator) -> torch.Tensor:
    """UpperCaSE's step: a linear head fitted from zero on the context features (the task opened from
    the context, no gradients), then its cross-entropy on context + target with gradients through the
    adapter, the task opened from that batch (CaSE's adaptive mode, as the reference's ``learn``)."""
    way = int(cy.max()) + 1
    with torch.no_grad():
        with model.task(ctx) as f:
            feats = model.embed(ctx) if f is None else f
    dev = feats.device
    w, b = fit_linear_head(feats, torch.as_tensor(cy, device=dev), way, linear_steps, rng=rng)
    batch = torch.cat([ctx, tgt])
    labels = torch.as_tensor(np.concatenate([cy, ty]), device=dev)
    with model.task(batch) as f:
        feats = model.embed(batch) if f is None else f
        return F.cross_entropy(feats @ w.T + b, labels)


@dataclass
class EvalResult:
    accuracy: float                  # Naive Bayes head: fraction of query images classified correctly
    loss: float                      # Naive Bayes head: mean cross-entropy (nats) on the query set
    num_query: int
    extra: dict[str, float] = field(default_factory=dict)  # the adapter's own heads, e.g. accuracy_linear
    support_features: torch.Tensor | None = field(default=None, repr=False)  # (n, d), with features=True
    query_features: torch.Tensor | None = field(default=None, repr=False)    # (m, d)
    query_norm: float | None = None  # mean L2 norm of the query features before feature_norm (the body's scale)


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
        norms: list[torch.Tensor] = []
        q = model.embed_images(query_x, norms=norms)
    dev = s.device
    query_norm = float(torch.cat(norms).float().mean()) if norms and len(query_y) else None
    C = int(np.max(support_y)) + 1
    sy, y = torch.as_tensor(support_y, device=dev), torch.as_tensor(query_y, device=dev)
    logits = model.head(s, sy, q, C)
    extra = model.adapter.extra_eval(s, sy, q, y, C, seed=seed)
    return EvalResult(float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y)), len(query_y),
                      extra, s if features else None, q if features else None, query_norm)
