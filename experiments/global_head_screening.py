"""How far can one client steer the global head of the default federation? The claim checks and the robust
screening of ``fedfit.global_head`` on real features.

    python experiments/global_head_screening.py [SEED ...]        (data seeds; default 0 1 2)

The default options (OpenClipart, 20 clients x 5 classes x 5 shots, 96 px, ProtoNets on unit features),
every image embedded once under the initial state (round 0: FiLM at identity, the frozen Lite0). Per
data seed: how many classes have 1, 2 or >= 3 holders and the share of support images in classes of
fewer than 3; rho (``GlobalStatistics.scale``) and the bound 3 rho a hostile holder of a two-holder class
meets under a robust strategy, beside the distance from such a class's mean to its nearest other class's
mean; what the screening costs honest clients (contributions dropped, global accuracy with and without
it); and an attack on every two-holder class in turn, by each of its holders: the hostile client sends
the 5 images it may hold with the class mean that drags the class's global mean onto its nearest other
class (FedAvg: the mean that puts the union there, scaled into the unit ball; robust: the furthest point
on that line the screening keeps) - the class's global mean moved (over 3 rho) and the accuracy on that
class's query images. A claim of 50,000 images is refused by the claim check under every strategy.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from fedfit import wire
from fedfit.config import load_config
from fedfit.federated import initial_state, plans, shared_model, source
from fedfit.global_head import ROBUST_FACTOR, ClassLimits, GlobalStatistics, client_statistics


@torch.no_grad()
def embed(cfg) -> np.ndarray:
    model = shared_model(cfg)
    layout, flat = initial_state(cfg)
    model.load_state_arrays(layout.unpack(flat, copy=True))
    model.eval()
    return model.embed_images(source(cfg).images).double().numpy()


def server(replies, dim, limits, robust):
    gs = GlobalStatistics(dim, scatter=False)
    for client, stats in replies:
        gs.add(client, wire.class_stats_of(wire.arrays_record(stats), dim, limits=limits))
    rho = gs.scale()
    dropped = gs.robust_filter() if robust else []
    return gs, rho, dropped


def accuracy(gs, feats, labels, only=None) -> float:
    head = gs.head("protonets")
    keep = np.ones(len(labels), bool) if only is None else labels == only
    return float((head.predict(feats[keep]) == labels[keep]).mean())


def replace(honest, client, c, mean, count):
    out = []
    for k, s in honest:
        if k == client:
            s = {key: v.copy() for key, v in s.items()}
            j = int(np.flatnonzero(s["class_ids"] == c)[0])
            s["counts"][j], s["sums"][j] = count, (count * mean).astype(np.float32)
        out.append((k, s))
    return out


def class_mean(gs, c):
    parts = gs.by_class.get(c) or []
    return None if not parts else sum(k.count * k.mean for k in parts) / sum(k.count for k in parts)


def seed_report(seed: int, f: np.ndarray) -> None:
    cfg = load_config(overrides={"data_seed": seed, "device": "cpu"})
    ps = plans(cfg)[:cfg["num_clients"]]
    labels = np.asarray(source(cfg).labels)
    limits, shots, dim = ClassLimits.of(cfg), cfg["shots"], f.shape[1]
    honest = [(p.client_id, client_statistics(f[p.support_idx], p.support_y, p.classes, scatter=False)) for p in ps]
    q = np.unique(np.concatenate([p.query_idx for p in ps]))
    qf, ql = f[q], labels[q]
    holders = np.bincount(np.concatenate([p.classes for p in ps]), minlength=labels.max() + 1)
    held = np.flatnonzero(holders)
    few = holders[held] < 3
    fed, rho, _ = server(honest, dim, limits, robust=False)
    rob, _, dropped = server(honest, dim, limits, robust=True)
    means = {c: class_mean(fed, c) for c in held}
    two = [c for c in held if holders[c] == 2]
    nearest = {c: min((k for k in held if k != c), key=lambda k: np.linalg.norm(means[k] - means[c])) for c in two}
    gap = [np.linalg.norm(means[nearest[c]] - means[c]) for c in two]
    print(f"data_seed {seed}: {len(held)} classes: {int((holders[held] == 1).sum())} with 1 holder, {len(two)} with 2, "
          f"{int((~few).sum())} with >= 3; classes of < 3 holders hold "
          f"{holders[held][few].sum() / (len(ps) * cfg['classes_per_client']):.0%} of the support images")
    print(f"  rho = {rho:.3f}, bound 3 rho = {ROBUST_FACTOR * rho:.3f}; a two-holder class's mean to its nearest other "
          f"class's mean: median {np.median(gap):.3f} (min {min(gap):.3f})")
    print(f"  honest clients: {len(dropped)} contributions dropped by the screening; global accuracy "
          f"{100 * accuracy(fed, qf, ql):.1f}% unscreened, {100 * accuracy(rob, qf, ql):.1f}% screened, "
          f"{rob.unscreened()} one-holder classes unscreened")
    rows = []
    for c in two:
        a, b = [p.client_id for p in ps if c in p.classes]
        for good, bad in ((a, b), (b, a)):
            mu = dict(honest)[good]["sums"][list(dict(honest)[good]["class_ids"]).index(c)] / shots
            target = means[nearest[c]]
            try:
                server(replace(honest, bad, c, target, 50_000.0), dim, limits, robust=False)
                raise SystemExit("a claim of 50,000 images was accepted")
            except ValueError:
                pass
            h = 2 * target - mu  # FedAvg: the union's mean lands on the nearest class's
            h = h / max(1.0, np.linalg.norm(h) * 1.001)
            g_fed, _, _ = server(replace(honest, bad, c, h, float(shots)), dim, limits, robust=False)
            best = None
            for t in np.linspace(0, 2, 201):  # robust: the furthest point along mu -> 2 target - mu still kept
                h_t = mu + t * (target - mu)
                if np.linalg.norm(h_t) > 1:
                    break
                g, r, _ = server(replace(honest, bad, c, h_t, float(shots)), dim, limits, robust=True)
                if class_mean(g, c) is not None:
                    best = (g, r)
            g_rob, r = best
            moved = np.linalg.norm(class_mean(g_rob, c) - mu)
            rows.append((np.linalg.norm(class_mean(g_fed, c) - mu), moved / (ROBUST_FACTOR * r), moved,
                         accuracy(fed, qf, ql, c), accuracy(g_fed, qf, ql, c), accuracy(g_rob, qf, ql, c)))
    m = np.array(rows)
    print(f"  attack on each of the {len(two)} two-holder classes by each holder ({len(m)} attacks, 5 images each; "
          f"50,000 refused every time): class mean moved from the honest holder's by {m[:, 0].mean():.3f} (FedAvg) "
          f"vs {m[:, 2].mean():.3f} (robust, max {m[:, 1].max():.2f} x 3 rho); the class's query accuracy "
          f"{100 * m[:, 3].mean():.1f}% clean, {100 * m[:, 4].mean():.1f}% FedAvg attacked, "
          f"{100 * m[:, 5].mean():.1f}% robust attacked")


if __name__ == "__main__":
    torch.set_num_threads(2)
    seeds = [int(s) for s in sys.argv[1:]] or [0, 1, 2]
    feats = embed(load_config(overrides={"device": "cpu"}))
    for s in seeds:
        seed_report(s, feats)
