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

**Claims** (``ClassLimits``; under every strategy: input validation, like a wrong feature width). A
reply whose statistics claim more than a client of the run can hold is refused with its reason (a
"rejected" failure, counted like every refused reply; nothing is clipped):

  * counts must be whole numbers; per class at most ``shots`` (kshot and natural partitions) or the
    client's whole support set (dirichlet); in all at most ``classes_per_client`` x ``shots`` (kshot;
    dirichlet without ``quantity_skew``; with it, the log-normal size's 1 - 3e-7 quantile
    size x exp(5 sigma - sigma^2 / 2)); a kshot client holds at most ``classes_per_client`` classes;
  * ``feature_norm = l2``: every feature is a unit vector, so a class's n_c features have
    ||s_c||^2 / n_c + trace(W_c) = n_c: a class mean outside the unit ball, or a mean and spread that
    add up to more than unit features can (1% margin for low-precision features), is refused.

So a client that claims 50,000 images of a class is refused, and a client's weight in a class's mean is
at most its declared share (kshot: 1 / holders, every honest holder sending ``shots`` images).

**Robust strategies** screen the statistics (``GlobalStatistics.robust_filter``) before the head is built:

  * a class with >= 3 holders: a client's contribution (count, sum, factor) is dropped when its class
    mean lies more than ``ROBUST_FACTOR`` x the class's median distance from the coordinate-wise median
    of the holders' class means, or its spread (trace of W_kc / n_kc) deviates from the median spread by
    more than ``ROBUST_FACTOR`` x that median (honest clients decide the medians while they are the
    majority of the class's holders, as for FedMedian);
  * a class with 2 holders: nobody can tell which of two disagreeing clients is right, so the pair is
    compared with the federation: rho = the median, over every contribution to a class of >= 2 holders,
    of its mean's distance from its class's coordinate-wise median (``scale``; honest clients decide it
    while most contributions are honest). When the two means lie more than 2 x ``ROBUST_FACTOR`` x rho
    apart (each more than ``ROBUST_FACTOR`` x rho from their midpoint) both are dropped and the class
    leaves the global head. **Bound**: a kept hostile contribution of share s of the class's count lies
    within 2 F rho of the honest holder's mean, so the class's global mean lies within 2 s F rho of it
    (F = ``ROBUST_FACTOR`` = 3; kshot, s = 1/2: within 3 rho); with unit features and no screening
    (FedAvg) the claims above still keep it within s (1.005 + ||mu_honest||) <= 1.003 of it (kshot).
    On the default federation's real features 3 rho ~ 0.9 is about twice the distance from such a
    class's mean to its nearest class's (README, ``experiments/global_head_screening.py`` at commit 6ee881f): the bound
    stops far-away means, not a hostile holder dragging the class onto its neighbour;
  * a class with 1 holder is that client's alone: its mean is **unscreened** (counted as
    ``global_unscreened`` in the round's record; with unit features it lies in the unit ball);
  * with LDA / QDA, a contribution to a class of 1 or 2 holders whose spread deviates from the
    federation's median spread by more than ``ROBUST_FACTOR`` x that median is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedfit.heads import MIN_IDENTITY_WEIGHT, cholesky_safe, gaussian_log_prob

ROBUST_FACTOR = 3.0
SCATTER_HEADS = ("lda", "qda")  # heads whose global version needs second-order statistics
UNIT_MARGIN = 0.01  # unit features: slack on ||mean||^2 + spread <= 1 for float32 / bf16 features
SKEW_QUANTILE_Z = 5.0  # dirichlet with quantity_skew: a client's size limit at this z of the log-normal


def needs_scatter(head: str) -> bool:
    return head in SCATTER_HEADS


@dataclass(frozen=True)
class ClassLimits:
    """What one client of the run can claim in its class statistics (module docstring, "Claims"):
    ``per_class`` images of one class, ``per_client`` images in all, ``classes`` classes (None: no
    limit), ``unit``: every feature is a unit vector (``feature_norm = l2``)."""

    per_class: int | None = None
    per_client: int | None = None
    classes: int | None = None
    unit: bool = False

    @classmethod
    def of(cls, cfg: dict) -> "ClassLimits":
        """The limits the run's declared partition implies (``partition``, ``shots``,
        ``classes_per_client``, ``quantity_skew``, ``feature_norm``)."""
        unit = cfg.get("feature_norm") == "l2"
        shots, per = int(cfg["shots"]), int(cfg["classes_per_client"])
        if cfg["partition"] == "natural":
            return cls(per_class=shots, unit=unit)
        if cfg["partition"] == "dirichlet":
            size, sigma = per * shots, float(cfg.get("quantity_skew", 0.0))
            if sigma > 0:  # the partition's log-normal size, max(4, round(size exp(sigma z - sigma^2 / 2)))
                size = max(4, int(np.ceil(size * np.exp(SKEW_QUANTILE_Z * sigma - sigma ** 2 / 2))))
            return cls(per_class=size, per_client=size, unit=unit)
        return cls(per_class=shots, per_client=per * shots, classes=per, unit=unit)

    def check(self, stats: dict[str, np.ndarray]) -> None:
        """ValueError naming the first claim no client of the run can make (validated arrays of
        ``wire.class_stats_of``: counts (C,), sums (C, d), optional factor / factor_rows)."""
        counts = np.asarray(stats["counts"], np.float64)
        if np.any(counts != np.round(counts)):
            raise ValueError("class counts that are not whole numbers of images")
        held = int((counts > 0).sum())
        if self.classes is not None and held > self.classes:
            raise ValueError(f"statistics of {held} classes; a client of this run holds at most {self.classes}")
        if self.per_class is not None and counts.size and counts.max() > self.per_class:
            raise ValueError(f"a count of {counts.max():.0f} images of one class; a client of this run holds at most "
                             f"{self.per_class}")
        if self.per_client is not None and counts.sum() > self.per_client:
            raise ValueError(f"counts adding up to {counts.sum():.0f} images; a client of this run holds at most "
                             f"{self.per_client}")
        if not self.unit:
            return
        n = np.maximum(counts, 1.0)
        energy = (np.asarray(stats["sums"], np.float64) ** 2).sum(1) / n  # ||s_c||^2 / n_c = n_c ||mu_c||^2
        if "factor" in stats:
            rows = np.concatenate([[0], np.cumsum(stats["factor_rows"])])
            sq = np.concatenate([[0.0], np.cumsum((np.asarray(stats["factor"], np.float64) ** 2).sum(1))])
            energy = energy + sq[rows[1:]] - sq[rows[:-1]]  # + trace(W_c)
        if np.any(energy > counts * (1 + UNIT_MARGIN) + 1e-6):
            raise ValueError("class statistics that unit-length features cannot have (a mean outside the unit ball, "
                             "or a mean and spread adding up to more than 1)")


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

    def _distances(self) -> dict[int, np.ndarray]:
        """Per class of >= 2 holders: each contribution's mean's distance from the coordinate-wise
        median of the class's means (holders,)."""
        out = {}
        for c, parts in self.by_class.items():
            if len(parts) >= 2:
                means = np.stack([k.mean for k in parts])
                out[c] = np.linalg.norm(means - np.median(means, axis=0), axis=1)
        return out

    def scale(self) -> float:
        """rho: the median distance of a contribution's mean from its class's coordinate-wise median, over
        every contribution to a class of >= 2 holders (0 when there is none)."""
        return _median_all(self._distances())

    def unscreened(self) -> int:
        """Classes held by a single client: no rule compares their mean with anyone's."""
        return sum(len(parts) == 1 for parts in self.by_class.values())

    def robust_filter(self) -> list[tuple[int, int]]:
        """Drop outlying contributions (module docstring); returns the (client, class) pairs dropped."""
        dist = self._distances()
        rho = _median_all(dist)
        every = [k.spread for parts in self.by_class.values() for k in parts]
        fed_spread = float(np.median(every)) if every else 0.0
        dropped = []
        for c, parts in self.by_class.items():
            spread = np.array([k.spread for k in parts])
            if len(parts) >= 3:
                bad = dist[c] > ROBUST_FACTOR * np.median(dist[c]) + 1e-12
                med = np.median(spread)
            else:  # 1 or 2 holders: against the federation's scales
                bad = dist[c] > ROBUST_FACTOR * rho + 1e-12 if len(parts) == 2 else np.zeros(1, bool)
                bad = np.repeat(bad.any(), len(parts))  # two that disagree: neither can be trusted
                med = fed_spread
            if self.scatter:
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


def _median_all(values: dict[int, np.ndarray]) -> float:
    return float(np.median(np.concatenate(list(values.values())))) if values else 0.0


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
