"""Splitting an ImageSet into few-shot clients.

Every function is deterministic given its ``seed`` (or ``rng``) and the data, so each simulation process
can recompute the same partition on its own. Plans hold indices only (cheap); ``materialize`` copies one
client's images. Support and query sets are ordered class by class, local labels 0..C-1 follow the
order of ``classes`` (sorted global ids).

Queries are held out in one of two ways. Without ``query_data`` they are images of the training set that
no client trains on (each image in at most one client's support, query or history set). With
``query_data`` (a source's test split, with the same classes) every client's queries are drawn from the
test images of its classes: never trained on by anyone, distinct within a client, independent across
clients (two clients of one class may share test images, as in FiT's protocol where every client is
tested on all test images of its classes: ``queries = -1``). Without a test split, ``queries = -1``
(k-shot partitions) is that protocol on held-out images: every image of the client's classes that no
client holds (in nobody's support or history set), shared by the clients of a class; the plan keeps
one image per client and class free, so every class a client holds has queries.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .base import ClientData, DataError, ImageSet


@dataclass
class ClientPlan:
    """One client as indices into an ImageSet: int64 arrays; *_y are local labels 0..C-1.
    history_idx: the client's unlabelled history images (labels withheld; empty unless asked for)."""

    client_id: int
    classes: np.ndarray
    support_idx: np.ndarray
    support_y: np.ndarray
    query_idx: np.ndarray
    query_y: np.ndarray
    history_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def materialize(data: ImageSet, plan: ClientPlan, query_data: ImageSet | None = None) -> ClientData:
    """Copy the images of ``plan`` out of ``data`` -> ClientData (uint8 (n, S, S, 3) arrays); the query
    images out of ``query_data`` when the plan drew them from it (a test split)."""
    queries = data if query_data is None else query_data
    return ClientData(client_id=plan.client_id, support_x=np.asarray(data.images[plan.support_idx]),
                      support_y=plan.support_y, query_x=np.asarray(queries.images[plan.query_idx]),
                      query_y=plan.query_y, classes=plan.classes,
                      history_x=np.asarray(data.images[plan.history_idx]), query_ids=plan.query_idx)


def _require(minimum: int, **values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise DataError(f"{name} must be an int >= {minimum}, got {value!r}")


def _max_clients(cap: np.ndarray, classes_per_client: int) -> int:
    """Largest k with sum_c min(cap_c, k) >= k * C (k clients of C distinct classes fit)."""
    lo, hi = 0, int(cap.sum()) // classes_per_client
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(cap, mid).sum() >= mid * classes_per_client:
            lo = mid
        else:
            hi = mid - 1
    return lo


def kshot_plan(data: ImageSet, num_clients: int, classes_per_client: int, shots: int, queries: int,
               seed: int, history: int = 0, held_out: int = 0, held_out_upto: bool = False,
               query_data: ImageSet | None = None) -> list[ClientPlan]:
    """Plans for ``partition_kshot`` (same arguments). ``held_out`` more clients (ids num_clients ..
    num_clients + held_out - 1: new users that never train) are planned AFTER the others, from the images
    left over, so the first ``num_clients`` plans are the same whatever ``held_out`` is (but for their
    queries with ``queries = -1`` and no ``query_data``: new users hold images too); with
    ``held_out_upto`` as many as the leftover images allow, at most ``held_out`` (else DataError).
    ``query_data``: draw the queries from this set (a test split; see the module docstring), ``queries``
    per class, or every test image of the class with ``queries = -1``. Without ``query_data``,
    ``queries = -1``: every image of the client's classes that no client (new users included) holds; the
    plan keeps one image per client and class out of every support and history set, so none is empty."""
    _require(1, num_clients=num_clients, classes_per_client=classes_per_client, shots=shots)
    _require(0, history=history, held_out=held_out)
    leftover = query_data is None and queries == -1
    if queries != -1:
        _require(0, queries=queries)
    pick = None if query_data is None else _test_queries(data, query_data, queries, seed)
    need = shots + history + (0 if pick else 1 if leftover else queries)  # leftover: one query image kept per slot
    labels = np.asarray(data.labels)
    cap = data.counts() // need  # disjoint (shots [+ queries] + history)-image slots per class
    qtext = "" if pick else " + 1 query" if leftover else f" + {queries} queries"
    what = (f"{classes_per_client} classes x ({shots} shots{qtext}"
            f"{f' + {history} history' if history else ''})")
    if _max_clients(cap, classes_per_client) < num_clients:
        most_clients = _max_clients(cap, classes_per_client)
        most_classes = int(np.minimum(cap, num_clients).sum()) // num_clients
        raise DataError(
            f"{data.name}: cannot make {num_clients} clients x {what} with no image used twice: "
            f"{int((cap > 0).sum())} of {data.num_classes} classes have >= {need} images; at most {most_clients} "
            f"clients of {classes_per_client} classes, or {num_clients} clients of at most {most_classes} "
            f"classes, or fewer shots{'' if pick else '/queries'}{'/history' if history else ''}")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(labels)), labels))  # grouped by class, random within a class
    start = np.concatenate([[0], np.cumsum(data.counts())])
    rem = cap.copy()
    slots = _Slots(order, start, cap, shots, 0 if pick else 1 if leftover else queries, need, pick)
    plans = _assign(num_clients, 0, rem, rng, classes_per_client, slots)
    if held_out > 0:
        most = _max_clients(rem, classes_per_client)
        held_out = min(held_out, most) if held_out_upto else held_out
        if most < held_out:
            raise DataError(f"{data.name}: after {num_clients} clients, the images left give at most {most} new "
                            f"users x {what}, not {held_out}: use new_users <= {most} or fewer clients")
        plans += _assign(held_out, num_clients, rem, rng, classes_per_client, slots)
    return _leftover_queries(data, plans) if leftover else plans


def _leftover_queries(data: ImageSet, plans: list[ClientPlan]) -> list[ClientPlan]:
    """``queries = -1`` without a test split: each client's queries become every image of its classes that
    no client holds (no support or history image of anyone), class by class; the one query image each
    plan kept per class is among them."""
    labels = np.asarray(data.labels)
    held = np.zeros(len(labels), dtype=bool)
    for p in plans:
        held[p.support_idx] = True
        held[p.history_idx] = True
    free = np.flatnonzero(~held)
    by_class = {int(c): free[labels[free] == c] for c in np.unique(np.concatenate([p.classes for p in plans]))}
    out = []
    for p in plans:
        q = [by_class[int(c)] for c in p.classes]
        out.append(replace(p, query_idx=np.concatenate(q).astype(np.int64),
                           query_y=np.repeat(np.arange(len(q), dtype=np.int64), [len(x) for x in q])))
    return out


def _test_queries(data: ImageSet, query_data: ImageSet, queries: int, seed: int):
    """``pick(client_id, class) -> indices into query_data``: ``queries`` distinct test images of the
    class (all of them for -1), from a stream of (seed, client, class); DataError when a class has fewer."""
    if list(query_data.class_names) != list(data.class_names):
        raise DataError(f"{query_data.name}: the query split's classes differ from the training split's")
    by_class = [np.flatnonzero(query_data.labels == c) for c in range(data.num_classes)]
    if queries != -1:
        short = [c for c in range(data.num_classes) if 0 < data.counts()[c] and len(by_class[c]) < queries]
        if short:
            raise DataError(f"{query_data.name}: {len(short)} classes have fewer than queries = {queries} test "
                            f"images (e.g. {data.class_names[short[0]]!r}: {len(by_class[short[0]])}); use "
                            f"queries <= {min(len(by_class[c]) for c in short)} or -1 (all of them)")

    def pick(client_id: int, c: int) -> np.ndarray:
        idx = by_class[c]
        if queries == -1:
            return idx
        rng = np.random.default_rng([seed, client_id, c, 0x9E5])
        return np.sort(rng.choice(idx, queries, replace=False))

    return pick


@dataclass
class _Slots:
    """Where a client's images come from: class ``c``'s slot ``s`` is ``need`` images of the training
    set's random class order (support, then queries unless ``pick`` draws them from a test split, then
    history)."""

    order: np.ndarray
    start: np.ndarray
    cap: np.ndarray
    shots: int
    queries: int
    need: int
    pick: object = None

    def block(self, c: int, s: int) -> np.ndarray:
        return self.order[self.start[c] + s * self.need: self.start[c] + (s + 1) * self.need]


def _assign(n: int, first_id: int, rem: np.ndarray, rng: np.random.Generator, classes_per_client: int,
            slots: _Slots) -> list[ClientPlan]:
    """``n`` clients (ids from ``first_id``) of distinct classes from the free slots ``rem`` (updated in
    place); greedy, but always leaving the remaining clients a feasible choice."""
    plans = []
    shots, queries = slots.shots, slots.queries
    for i in range(n):
        k = n - i  # clients still to serve, this one included
        big = np.flatnonzero(rem >= k)
        slack = int(np.minimum(rem, k).sum()) - k * classes_per_client
        forced = max(0, len(big) - slack)  # must take this many "big" classes to stay feasible
        chosen = rng.choice(big, forced, replace=False) if forced else np.empty(0, np.int64)
        others = np.setdiff1d(np.flatnonzero(rem > 0), chosen)
        chosen = np.sort(np.concatenate([chosen, rng.choice(others, classes_per_client - forced, replace=False)]))
        slot = slots.cap[chosen] - rem[chosen]
        rem[chosen] -= 1
        blocks = [slots.block(c, s) for c, s in zip(chosen, slot)]
        local = np.arange(classes_per_client, dtype=np.int64)
        cid = first_id + i
        if slots.pick is None:
            q = [b[shots:shots + queries] for b in blocks]
        else:
            q = [slots.pick(cid, int(c)) for c in chosen]
        plans.append(ClientPlan(
            client_id=cid, classes=chosen.astype(np.int64),
            support_idx=np.concatenate([b[:shots] for b in blocks]), support_y=np.repeat(local, shots),
            query_idx=np.concatenate(q).astype(np.int64),
            query_y=np.repeat(local, [len(x) for x in q]).astype(np.int64),
            history_idx=np.concatenate([b[shots + queries:] for b in blocks]).astype(np.int64)))
    return plans


def partition_kshot(data: ImageSet, num_clients: int, classes_per_client: int, shots: int, queries: int,
                    seed: int, history: int = 0) -> list[ClientData]:
    """``num_clients`` clients, each with C = ``classes_per_client`` random classes (classes recur across
    clients), ``shots`` support and ``queries`` query images per class; no image is used twice anywhere.
    ``history``: also that many unlabelled images per class of the client's own classes (``history_x``,
    class by class, labels withheld), disjoint from every support / query / history image of any client.
    With ``history=0`` the partition is the same as without the option, for the same seed.

    Raises DataError (saying the most the data can give) when the data is too small.
    """
    return [materialize(data, p)
            for p in kshot_plan(data, num_clients, classes_per_client, shots, queries, seed, history)]


def dirichlet_plan(data: ImageSet, num_clients: int, alpha: float, size: int, queries: int, seed: int,
                   quantity_skew: float = 0.0, held_out: int = 0, held_out_upto: bool = False,
                   query_data: ImageSet | None = None, min_classes: int = 2) -> list[ClientPlan]:
    """Dirichlet label skew (Hsu et al. 2019): client i's class mix is q_i ~ Dir(alpha * 1) over the data
    set's classes and its ``size`` support images are a Multinomial(size, q_i) draw (small alpha: few
    classes per client; large: near-uniform). ``quantity_skew`` sigma > 0 also varies the size, log-normally
    with mean ``size``. A class needs 2 support images to take part in an episode (one context, one
    target): classes drawn once are dropped, and a client keeps drawing (seeded) until it has
    ``min_classes`` classes. Queries: ``queries`` per class held, from ``query_data`` (a test split) or from
    training images no client trains on; new users (``held_out``) after the training clients, as in
    ``kshot_plan``. No support image is used twice. DataError when a class runs out of images."""
    _require(1, num_clients=num_clients, size=size, min_classes=min_classes)
    _require(0, held_out=held_out)
    if not alpha > 0:
        raise DataError(f"dirichlet_alpha must be > 0, got {alpha}")
    if query_data is None or queries != -1:
        _require(0, queries=queries)
    pick = None if query_data is None else _test_queries(data, query_data, queries, seed)
    extra = 0 if pick else queries
    labels = np.asarray(data.labels)
    present = np.flatnonzero(data.counts() > 0)
    if len(present) < min_classes:
        raise DataError(f"{data.name}: {len(present)} classes, a client needs {min_classes}")
    rng = np.random.default_rng([seed, 0xD1])
    order = np.lexsort((rng.random(len(labels)), labels))
    start = np.concatenate([[0], np.cumsum(data.counts())])
    used = np.zeros(data.num_classes, dtype=np.int64)  # images taken from each class so far

    def client(cid: int) -> ClientPlan | None:
        n_img = size
        if quantity_skew > 0:
            n_img = max(2 * min_classes, int(round(size * np.exp(quantity_skew * rng.standard_normal()
                                                                  - quantity_skew ** 2 / 2))))
        for _ in range(1000):
            counts = np.zeros(data.num_classes, dtype=np.int64)
            counts[present] = rng.multinomial(n_img, rng.dirichlet(np.full(len(present), alpha)))
            counts[counts < 2] = 0
            if (counts > 0).sum() >= min_classes:
                break
        else:
            raise DataError(f"{data.name}: with dirichlet_alpha = {alpha} and {n_img} images a client almost never "
                            f"draws {min_classes} classes of >= 2 images: raise dirichlet_alpha or the client size")
        classes = np.flatnonzero(counts)
        need = counts[classes] + extra
        if np.any(used[classes] + need > data.counts()[classes]):
            return None
        blocks = [order[start[c] + used[c]: start[c] + used[c] + k] for c, k in zip(classes, need)]
        used[classes] += need
        local = np.arange(len(classes), dtype=np.int64)
        q = ([b[counts[c]:] for b, c in zip(blocks, classes)] if pick is None
             else [pick(cid, int(c)) for c in classes])
        return ClientPlan(client_id=cid, classes=classes.astype(np.int64),
                          support_idx=np.concatenate([b[:counts[c]] for b, c in zip(blocks, classes)]),
                          support_y=np.repeat(local, counts[classes]), query_idx=np.concatenate(q).astype(np.int64),
                          query_y=np.repeat(local, [len(x) for x in q]).astype(np.int64))

    plans = []
    for cid in range(num_clients + held_out):
        p = client(cid)
        if p is None:
            if cid >= num_clients and held_out_upto:
                break
            who = "training clients" if cid < num_clients else "new users"
            raise DataError(f"{data.name}: the images ran out at client {cid} ({who}) of a Dirichlet partition of "
                            f"{num_clients} clients x ~{size} support images{'' if pick else f' + {queries} queries per class'}: "
                            f"use fewer clients, shots or queries{', or new_users = 0' if cid >= num_clients else ''}")
        plans.append(p)
    return plans


def natural_plan(data: ImageSet, shots: int, queries: int, seed: int, min_classes: int = 2) -> list[ClientPlan]:
    """Plans for ``partition_natural`` (same arguments)."""
    _require(1, shots=shots, min_classes=min_classes)
    _require(0, queries=queries)
    if data.owners is None or not data.owner_names:
        raise DataError(f"{data.name} names no owners (e.g. imagefolder with root/<client>/<class>/ folders); "
                        f"use partition_kshot instead")
    rng = np.random.default_rng(seed)
    owners, labels = np.asarray(data.owners), np.asarray(data.labels)
    plans, best = [], 0
    for o in range(len(data.owner_names)):
        mine = np.flatnonzero(owners == o)
        classes = [c for c in np.unique(labels[mine]) if (labels[mine] == c).sum() >= shots + 1]
        best = max(best, len(classes))
        if len(classes) < min_classes:
            continue
        sup, sup_y, qry, qry_y = [], [], [], []
        for local, c in enumerate(classes):
            idx = rng.permutation(mine[labels[mine] == c])
            take = min(queries, len(idx) - shots)
            sup.append(idx[:shots])
            qry.append(idx[shots:shots + take])
            sup_y.append(np.full(shots, local, dtype=np.int64))
            qry_y.append(np.full(take, local, dtype=np.int64))
        plans.append(ClientPlan(client_id=o, classes=np.asarray(classes, dtype=np.int64),
                                support_idx=np.concatenate(sup), support_y=np.concatenate(sup_y),
                                query_idx=np.concatenate(qry), query_y=np.concatenate(qry_y)))
    if not plans:
        raise DataError(f"{data.name}: no owner has {min_classes} classes with >= {shots + 1} images "
                        f"(shots + 1); the most any owner has is {best}")
    return plans


def partition_natural(data: ImageSet, shots: int, queries: int, seed: int, min_classes: int = 2) -> list[ClientData]:
    """One client per owner from its own images: classes with >= shots + 1 images give ``shots`` support
    and up to ``queries`` query images; owners with fewer than ``min_classes`` such classes are left out.
    ``client_id`` is the owner's index into ``data.owner_names``. DataError when the data names no owners.
    """
    return [materialize(data, p) for p in natural_plan(data, shots, queries, seed, min_classes)]


def sample_task(data: ImageSet, way: int, shot: int, query: int, rng: np.random.Generator) -> ClientData:
    """One few-shot task: ``way`` random classes with ``shot`` support and ``query`` query images each
    (client_id 0, disjoint support/query)."""
    _require(1, way=way, shot=shot)
    _require(0, query=query)
    labels = np.asarray(data.labels)
    eligible = np.flatnonzero(data.counts() >= shot + query)
    if len(eligible) < way:
        raise DataError(f"{data.name}: a {way}-way {shot}-shot task with {query} queries needs {way} classes with "
                        f">= {shot + query} images; only {len(eligible)} have that many")
    classes = np.sort(rng.choice(eligible, way, replace=False))
    picks = [rng.choice(np.flatnonzero(labels == c), shot + query, replace=False) for c in classes]
    local = np.arange(way, dtype=np.int64)
    plan = ClientPlan(client_id=0, classes=classes.astype(np.int64),
                      support_idx=np.concatenate([p[:shot] for p in picks]), support_y=np.repeat(local, shot),
                      query_idx=np.concatenate([p[shot:] for p in picks]).astype(np.int64),
                      query_y=np.repeat(local, query))
    return materialize(data, plan)
