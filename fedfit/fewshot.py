"""Centralized few-shot evaluation: T sampled N-way k-shot tasks, frozen heads vs FiLM fine-tuning.

Per task: features of the frozen backbone score the query set with every requested head; then the
adapter is fine-tuned episodically on the support set (FiT's protocol, ``fedfit.episodes``) with
``ft_head`` and scored again. The adapter and head are reset before every task. Accuracies are
reported as mean +- 95% CI (1.96 standard errors over tasks); the fine-tuning gain also as a paired
difference on the same tasks, whose CI is much tighter than that of either accuracy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from fedfit.data import ImageSet, sample_task
from fedfit.episodes import FineTuneConfig, evaluate, finetune
from fedfit.format import markdown_table, pct
from fedfit.heads import create_head
from fedfit.model import FewShotModel


def mean_ci(x: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and 95% confidence half-width (normal approximation) of per-task values."""
    a = np.asarray(x, dtype=float)
    if a.size < 2:
        return float(a.mean()) if a.size else float("nan"), float("nan")
    return float(a.mean()), float(1.96 * a.std(ddof=1) / np.sqrt(a.size))


@dataclass
class FewShotResult:
    shot: int
    frozen: dict[str, list[float]] = field(default_factory=dict)   # head -> accuracy per task
    finetuned: list[float] = field(default_factory=list)           # ft_head after FiLM fine-tuning
    frozen_seconds: list[float] = field(default_factory=list)      # per task, all frozen heads
    finetune_seconds: list[float] = field(default_factory=list)    # per task, fine-tuning + scoring
    ft_head: str = "lda"

    def gain(self) -> tuple[float, float]:
        """Paired accuracy change of fine-tuning over the same head frozen: mean, 95% CI."""
        base = self.frozen.get(self.ft_head)
        if not base or not self.finetuned:
            return float("nan"), float("nan")
        return mean_ci(np.array(self.finetuned) - np.array(base[:len(self.finetuned)]))


def _head(name: str, shot: int, temperature) -> torch.nn.Module:
    opts = {"temperature": temperature} if name == "protonets" else {}
    return create_head(name, min_shots=shot, **opts)


def run_fewshot(model: FewShotModel, data: ImageSet, way: int, shot: int, query: int, tasks: int,
                heads: list[str], ft_head: str | None, ft: FineTuneConfig, seed: int = 0,
                temperature: float | str = 1.0, progress=None) -> FewShotResult:
    """``tasks`` tasks sampled with ``seed`` (the same tasks for every shot setting's seed)."""
    rng = np.random.default_rng(seed)
    res = FewShotResult(shot=shot, frozen={h: [] for h in heads}, ft_head=ft_head or "")
    device = model.device
    for t in range(tasks):
        task = sample_task(data, way, shot, query, rng)
        model.adapter.reset()
        model.reset_personal()  # every task starts afresh (e.g. ICIIA's history)
        t0 = time.perf_counter()
        for h in heads:
            model.head = _head(h, shot, temperature).to(device)
            res.frozen[h].append(evaluate(model, task.support_x, task.support_y, task.query_x, task.query_y).accuracy)
        res.frozen_seconds.append(time.perf_counter() - t0)
        if ft_head:
            t0 = time.perf_counter()
            model.head = _head(ft_head, shot, temperature).to(device)
            if ft_head not in res.frozen:  # the paired baseline
                res.frozen.setdefault(ft_head, []).append(
                    evaluate(model, task.support_x, task.support_y, task.query_x, task.query_y).accuracy)
            finetune(model, task.support_x, task.support_y, FineTuneConfig(**{**ft.__dict__, "seed": seed * 100003 + t}))
            res.finetuned.append(evaluate(model, task.support_x, task.support_y, task.query_x, task.query_y).accuracy)
            res.finetune_seconds.append(time.perf_counter() - t0)
        if progress:
            progress(t + 1, tasks, res)
    model.adapter.reset()
    model.reset_personal()
    return res


def format_table(results: list[FewShotResult], steps: int, lr: float) -> str:
    """Markdown table: one row per (shot, method), accuracy +- 95% CI, seconds per task."""
    rows: list[list[str | None]] = []
    for r in results:
        n_frozen = max(len(r.frozen), 1)
        for h, accs in r.frozen.items():
            m, ci = mean_ci(accs)
            rows.append([str(r.shot), f"frozen {h}", pct(m), pct(ci), f"{np.mean(r.frozen_seconds) / n_frozen:.2f}"])
        if r.finetuned:
            m, ci = mean_ci(r.finetuned)
            g, gci = r.gain()
            rows.append([str(r.shot), f"FiLM fine-tuned {r.ft_head} ({steps} steps, lr {lr})", pct(m), pct(ci),
                         f"{np.mean(r.finetune_seconds):.2f}"])
            rows.append([str(r.shot), "gain of fine-tuning (paired)", f"{100 * g:+.1f}", pct(gci), None])
    return markdown_table(["shots", "method", "accuracy (%)", "± 95% CI", "s / task"], rows, "rlrrr")
