"""The global Naive Bayes head (FiT's "global" accuracy), built from clients' class statistics.

Beside each client's personalized accuracy FiT reports a global one: ONE head over every class any
training client holds, fitted on all clients' support features, scored on held-out test images of
those classes. A federation cannot pool features, but the heads need only additive statistics of
them. Per class c of its support set (features f under the global adapter) a client sends
(``client_statistics``):

  * count n_c and sum s_c = sum f (d,): all ProtoNets needs;
  * for LDA / QDA also a factor R_c (r_c, d) of the class's centered scatter
    W_c = sum (f - mu_c)(f - mu_c)^T = R_c^T R_c, with r_c = min(n_c - 1, d) rows (eigenvectors of
    the class's Gram matrix: rotations of the features, not the features themselves). A few-shot client
    sends (C + n - C) x d numbers: 128 KB at 5 classes x 5 shots and d = 1,280, against 6.5 MB for one
    dense d x d scatter (and that per class for QDA).

``GlobalStatistics`` combines them exactly (the parallel-axis rule, all centered, so float32 messages
lose nothing to cancellation): the union's class means mu_c, class scatters
W_c = sum_k [W_kc + n_kc (mu_kc - mu_c)(mu_kc - mu_c)^T] and task scatter
T = sum_c [W_c + n_c (mu_c - m)(mu_c - m)^T]. ``GlobalHead`` then scores with the configured head
family and the global state's mixing weights, as ``fedfit.heads`` would on the union of the clients'
features (unbiased covariances T / (N - 1) and W_c / (n_c - 1); float64 on the server); a test checks
LDA against ``heads.LDA`` fitted on the union to 1e-4.

Robust strategies aggregate the statistics robustly too (``GlobalStatistics.robust_filter``): for every
class held by at least three clients, a client's contribution to that class (count, sum, factor) is
dropped when its class mean lies more than ``ROBUST_FACTOR`` x the median distance from the
coordinate-wise median of the clients' class means, or when its spread (trace of W_kc / n_kc) is more
than ``ROBUST_FACTOR`` x the median spread (median-based rules: honest clients decide the medians as
long as they are the majority of a class's holders, as for FedMedian).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedfit.heads import MIN_IDENTITY_WEIGHT, cholesky_safe, gaussian_log_prob

ROBUST_FACTOR = 3.0
SCATTER_HEADS = ("lda", "qda")  # heads whose global version needs second-order statistics


def needs_scatter(head: str) -> bool:
    return head in SCATTER_HEADS


def _centered_factor(x: np.ndarray) -> np.ndarray:
    """Rows R (r, d), r = min(n - 1, d), with R^T R = the centered scatter of x (n, d) (float64)."""
    n, d = x.shape
    r = min(n - 1, d)
    if r <= 0:
        return np.zeros((0, d))
    xc = x - x.mean(0, keepdims=True)
    if n <= d:  # Gram matrix (n, n): X^T X = sum_i (X^T v_i)(v_i^T X) over its eigenvectors v_i
        lam, v = np.linalg.eigh(xc @ xc.T)
        return (v[:, ::-1][:, :r].T @ xc)
    lam, u = np.linalg.eigh(xc.T @ xc)  # scatter (d, d): rows sqrt(lambda_i) u_i
    lam, u = lam[::-1][:r], u[:, ::-1][:, :r]
    return (u * np.sqrt(np.clip(lam, 0, None))).T


def client_statistics(feats: torch.Tensor | np.ndarray, labels: np.ndarray, classes: np.ndarray,
                      scatter: bool) -> dict[str, np.ndarray]:
    """What a client sends for the global head: features (n, d) of its support set with local labels
    (n,) 0..C-1 whose global class ids are ``classes`` (C,). Returns ``class_ids`` int64 (C,),
    ``counts`` float32 (C,), ``sums`` float32 (C, d) and, with ``scatter``, ``factor`` float32 (r, d) and
    ``factor_rows`` int64 (C,) (each class's rows of ``factor``, in class order)."""
    f = feats.detach().double().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float64)
    labels = np.asarray(labels)
    C = len(classes)
    counts = np.bincount(labels, minlength=C).astype(np.float32)
    sums = np.stack([f[labels == c].sum(0) for c in range(C)]).astype(np.float32)
    out = {"class_ids": np.asarray(classes, dtype=np.int64), "counts": counts, "sums": sums}
    if scatter:
        parts = [_centered_factor(f[labels == c]) for c in range(C)]
        out["factor"] = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, f.shape[1]), np.float32)
        out["factor_rows"] = np.array([len(p) for p in parts], dtype=np.int64)
    return out


@dataclass
class Contribution:
    """One client's statistics of one class (float64)."""

    client: int
    count: float
    mean: np.ndarray                    # (d,)
    factor: np.ndarray | None = None    # (r, d), R^T R = the client's centered scatter of the class

    @property
    def spread(self) -> float:
        """Mean squared distance of the client's features of this class to their mean."""
        return 0.0 if self.factor is None or self.count <= 0 else float((self.factor ** 2).sum() / self.count)


@dataclass
class GlobalStatistics:
    """Class statistics of many clients, by global class id; ``add`` one client's validated record."""

    dim: int
    scatter: bool
    by_class: dict[int, list[Contribution]] = field(default_factory=dict)

    def add(self, client: int, stats: dict[str, np.ndarray]) -> None:
        ids, counts, sums = stats["class_ids"], stats["counts"], stats["sums"]
        factor, rows = stats.get("factor"), stats.get("factor_rows")
        starts = np.concatenate([[0], np.cumsum(rows)]) if rows is not None else None
        for j, (c, n) in enumerate(zip(ids.tolist(), counts.tolist())):
            if n <= 0:
                continue
            fac = None
            if self.scatter:
                fac = np.asarray(factor[starts[j]:starts[j + 1]], dtype=np.float64)
            self.by_class.setdefault(int(c), []).append(
                Contribution(client, float(n), np.asarray(sums[j], np.float64) / n, fac))

    @property
    def clients(self) -> set[int]:
        return {k.client for parts in self.by_class.values() for k in parts}

    def robust_filter(self) -> list[tuple[int, int]]:
        """Drop outlying contributions (module docstring); returns the (client, class) pairs dropped."""
        dropped = []
        for c, parts in self.by_class.items():
            if len(parts) < 3:
                continue
            means = np.stack([k.mean for k in parts])
            dist = np.linalg.norm(means - np.median(means, axis=0), axis=1)
            bad = dist > ROBUST_FACTOR * np.median(dist) + 1e-12
            if self.scatter:
                spread = np.array([k.spread for k in parts])
                med = np.median(spread)
                bad |= np.abs(spread - med) > ROBUST_FACTOR * med + 1e-12
            dropped += [(k.client, c) for k, b in zip(parts, bad) if b]
            self.by_class[c] = [k for k, b in zip(parts, bad) if not b]
        return sorted(dropped)

    def head(self, name: str, e: np.ndarray | None = None, temperature: float | str = 1.0) -> "GlobalHead":
        """The global head of family ``name`` (protonets | lda | qda) with mixing weights ``e`` (the global
        state's ``head/e``; unused by ProtoNets)."""
        ids = np.array(sorted(c for c, parts in self.by_class.items() if parts), dtype=np.int64)
        if not len(ids):
            raise ValueError("no class statistics to build a global head from")
        n = np.array([sum(k.count for k in self.by_class[c]) for c in ids])
        mu = np.stack([sum(k.count * k.mean for k in self.by_class[c]) / nc for c, nc in zip(ids, n)])
        if name == "protonets":
            # a positive temperature never changes which class is nearest; "task" (the context's spread)
            # has no single value for a head over many clients: 1 there
            t = float(self.dim) if temperature == "dim" else 1.0 if temperature == "task" else float(temperature)
            return GlobalHead(name, ids, mu, temperature=t)
        if name not in SCATTER_HEADS or not self.scatter:
            raise ValueError(f"a global {name} head needs {'scatter ' if name in SCATTER_HEADS else ''}statistics")
        rows = [self._within_rows(c, m) for c, m in zip(ids, mu)]  # R_c with R_c^T R_c = W_c
        stacked = np.concatenate(rows)
        m_all = (n[:, None] * mu).sum(0) / n.sum()
        between = (mu - m_all) * np.sqrt(n)[:, None]
        task = stacked.T @ stacked + between.T @ between
        N = n.sum()
        cov_task = task / (N - 1) if N > 1 else np.zeros_like(task)
        relu = np.maximum(np.asarray(e, np.float64), 0.0)
        eye = np.eye(self.dim)
        if name == "lda":
            return GlobalHead(name, ids, mu, shared=relu[0] * cov_task + (relu[1] + MIN_IDENTITY_WEIGHT) * eye)
        return GlobalHead(name, ids, mu, shared=relu[1] * cov_task + (relu[2] + MIN_IDENTITY_WEIGHT) * eye,
                          class_rows=rows, class_weight=np.where(n > 1, relu[0] / np.maximum(n - 1, 1), 0.0))

    def _within_rows(self, c: int, mu: np.ndarray) -> np.ndarray:
        """Rows R (r, d) with R^T R = class ``c``'s centered scatter over the union: the clients'
        factors and their class means' offsets from the union's mean ``mu``, weighted by sqrt(count)."""
        parts = self.by_class[c]
        return np.concatenate([k.factor for k in parts] + [np.sqrt(k.count) * (k.mean - mu)[None] for k in parts])

    def bytes_per_client(self) -> float:
        """Mean float32 bytes of the statistics one client sent (class ids as int64)."""
        per: dict[int, float] = {}
        for parts in self.by_class.values():
            for k in parts:
                extra = 0 if k.factor is None else 4 * k.factor.size + 8
                per[k.client] = per.get(k.client, 0) + 8 + 4 + 4 * self.dim + extra
        return float(np.mean(list(per.values()))) if per else 0.0


@dataclass
class GlobalHead:
    """One head over classes ``class_ids`` (K,) with means (K, d). LDA: the shared covariance ``shared``
    (d, d); QDA: class c's covariance is ``class_weight[c] * R_c^T R_c + shared`` (``class_rows[c]`` = R_c),
    formed one class at a time."""

    name: str
    class_ids: np.ndarray
    means: np.ndarray
    shared: np.ndarray | None = None
    class_rows: list[np.ndarray] | None = None
    class_weight: np.ndarray | None = None
    temperature: float = 1.0

    def logits(self, query: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class scores (m, K) float64 of query features (m, d): log-likelihoods (LDA / QDA) or
        -||q - mu||^2 / temperature (ProtoNets)."""
        q = torch.as_tensor(query.detach().cpu().numpy() if isinstance(query, torch.Tensor) else np.asarray(query),
                            dtype=torch.float64)
        mu = torch.as_tensor(self.means, dtype=torch.float64)
        if self.name == "protonets":
            return (-torch.cdist(q, mu).pow(2) / self.temperature).numpy()
        shared = torch.as_tensor(self.shared)
        if self.name == "lda":
            return gaussian_log_prob(q, mu, cholesky_safe(shared)).numpy()
        cols = []
        for c, (rows, w) in enumerate(zip(self.class_rows, self.class_weight)):  # QDA: one class at a time
            r = torch.as_tensor(rows)
            L = cholesky_safe(w * (r.T @ r) + shared)
            cols.append(gaussian_log_prob(q, mu[c:c + 1], L[None])[:, 0])
        return torch.stack(cols, 1).numpy()

    def predict(self, query: np.ndarray | torch.Tensor) -> np.ndarray:
        """Global class ids (m,) of the best-scoring class for each query feature."""
        return self.class_ids[self.logits(query).argmax(1)]
