"""The global head's claim checks (every strategy) and robust screening (robust strategies) on OpenClipart's
federation (fedfit's default until 2026-12-07, and the one where classes have the fewest holders): 20 clients
x 5 classes x 5 shots, data_seed 0.

The partition is rebuilt from OpenClipart's class sizes alone (its labels are sorted by class, so the sizes
fix every plan; ``test_the_class_sizes_are_openclipart_s`` checks them against the data where it is on
this machine). Features are a stand-in for the backbone's: one seeded unit vector per image id around its
class's direction (``feature_norm = l2``, the default) - the rules see only the statistics.
"""
import os
from pathlib import Path

import numpy as np
import pytest

from fedfit import wire
from fedfit.config import load_config
from fedfit.data import ImageSet, kshot_plan
from fedfit.global_head import ROBUST_FACTOR, ClassLimits, GlobalStatistics, client_statistics

# images per class of openclipart at the defaults (openclipart-png 1:0.18+dfsg-19, 96 px, 52 classes, 2,818 images)
OPENCLIPART_SIZES = [40, 47, 49, 61, 20, 38, 123, 68, 49, 26, 26, 25, 61, 39, 26, 66, 77, 28, 111, 94, 165, 26, 21,
                     24, 42, 52, 27, 28, 54, 54, 54, 54, 67, 26, 46, 25, 32, 70, 25, 28, 49, 221, 24, 58, 157, 29, 92,
                     30, 62, 33, 44, 25]
DIM = 32
CLAIM = 50_000.0
OPENCLIPART = {"dataset": "openclipart", "image_size": 96, "num_clients": 20, "clients_per_round": 5}


def _default_plans(cfg):
    from fedfit.federated import AUTO_NEW_USERS

    labels = np.repeat(np.arange(len(OPENCLIPART_SIZES)), OPENCLIPART_SIZES)
    data = ImageSet("openclipart", np.zeros((len(labels), 1, 1, 3), np.uint8), labels,
                    [str(c) for c in range(len(OPENCLIPART_SIZES))])
    return kshot_plan(data, cfg["num_clients"], cfg["classes_per_client"], cfg["shots"], cfg["queries"], seed=0,
                      held_out=AUTO_NEW_USERS, held_out_upto=True)[:cfg["num_clients"]]


def _features():
    """(images, DIM) unit vectors: normalize(class direction + N(0, I / DIM)), seeded."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(OPENCLIPART_SIZES)), OPENCLIPART_SIZES)
    centres = rng.standard_normal((len(OPENCLIPART_SIZES), DIM))
    f = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True) \
        + rng.standard_normal((len(labels), DIM)) / np.sqrt(DIM)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def _server(replies, limits, robust, scatter=False):
    """What the server does with the replies [(client, stats)]: validate each (``wire.class_stats_of`` with the
    run's limits, as ``strategies.codec_layer``), add the accepted ones, screen under a robust strategy.
    Returns (statistics, refused {client: reason}, rho before screening)."""
    gs, refused = GlobalStatistics(DIM, scatter), {}
    for client, stats in replies:
        try:
            gs.add(client, wire.class_stats_of(wire.arrays_record(stats), DIM, scatter, limits=limits))
        except ValueError as e:
            refused[client] = str(e)
    rho = gs.scale()
    if robust:
        gs.robust_filter()
    return gs, refused, rho


def _class_mean(gs, c):
    parts = gs.by_class.get(c) or []
    if not parts:
        return None
    return sum(k.count * k.mean for k in parts) / sum(k.count for k in parts)


@pytest.fixture(scope="module")
def federation():
    cfg = load_config(overrides=OPENCLIPART)  # kshot, 20 clients x 5 classes x 5 shots, feature_norm l2
    assert (cfg["dataset"], cfg["partition"], cfg["num_clients"], cfg["classes_per_client"], cfg["shots"],
            cfg["feature_norm"]) == ("openclipart", "kshot", 20, 5, 5, "l2")
    plans, f = _default_plans(cfg), _features()
    honest = [(p.client_id, client_statistics(f[p.support_idx], p.support_y, p.classes, scatter=False)) for p in plans]
    return cfg, plans, honest


def test_openclipart_s_partition_leaves_most_classes_with_few_holders(federation):
    cfg, plans, honest = federation
    holders = np.bincount(np.concatenate([p.classes for p in plans]))
    held = holders[holders > 0]
    assert len(held) == 49 and (held < 3).sum() == 32 and (held == 2).sum() == 9 and (held == 1).sum() == 23
    gs, refused, _ = _server(honest, ClassLimits.of(cfg), robust=True)
    assert refused == {} and gs.unscreened() == 23  # the one-holder classes: reported, not screened


def _attack(honest, client, c, count, mean):
    """``honest`` with ``client``'s statistics of class ``c`` replaced by ``count`` images of mean ``mean``."""
    out = []
    for k, stats in honest:
        if k == client:
            stats = {key: v.copy() for key, v in stats.items()}
            j = int(np.flatnonzero(stats["class_ids"] == c)[0])
            stats["counts"][j] = count
            stats["sums"][j] = (count * mean).astype(np.float32)
        out.append((k, stats))
    return out


def test_a_client_claiming_50000_images_of_a_two_holder_class_barely_moves_its_global_mean(federation):
    """Class 0 ("animals") is held by clients 1 and 9 only. Client 9 claims 50,000 images of it with a mean
    at the far side of the unit sphere: refused under every strategy (a kshot client holds at most 5 images of
    a class), so the class's mean is client 1's. Claiming the 5 images it may hold, with any mean the checks
    accept, it keeps the class's global mean within ROBUST_FACTOR x rho = 3 rho of client 1's mean under a
    robust strategy (or drops the class) and within 1.003 (the unit ball, 1% margin) under FedAvg. Without
    the claim check the 50,000 images would own 99.99% of the class's mean."""
    cfg, plans, honest = federation
    limits = ClassLimits.of(cfg)
    c, (good, bad) = 0, [p.client_id for p in plans if 0 in p.classes]
    assert (good, bad) == (1, 9)
    mu_good = dict(honest)[good]["sums"][list(dict(honest)[good]["class_ids"]).index(c)] / cfg["shots"]
    far = -mu_good / np.linalg.norm(mu_good)
    clean = _class_mean(_server(honest, limits, robust=False)[0], c)
    for robust in (False, True):
        gs, refused, _ = _server(_attack(honest, bad, c, CLAIM, far), limits, robust)
        assert list(refused) == [bad] and "at most 5" in refused[bad]
        np.testing.assert_allclose(_class_mean(gs, c), mu_good, atol=1e-6)
    unchecked, refused, _ = _server(_attack(honest, bad, c, CLAIM, far), None, robust=False)
    assert refused == {} and np.linalg.norm(_class_mean(unchecked, c) - far) < 1e-3 * np.linalg.norm(far - clean)

    rng = np.random.default_rng(1)
    directions = [far] + [v / np.linalg.norm(v) for v in rng.standard_normal((10, DIM))]
    worst = 0.0  # the largest movement a kept attack reached, as a fraction of its bound
    for u in directions:
        for t in np.linspace(0.05, 2.0, 40):  # hostile means along u from client 1's mean, to the unit ball's edge
            h = mu_good + t * u
            if np.linalg.norm(h) > 1:
                break
            attacked = _attack(honest, bad, c, cfg["shots"], h)
            fedavg, refused, _ = _server(attacked, limits, robust=False)
            assert refused == {}
            assert np.linalg.norm(_class_mean(fedavg, c) - mu_good) <= 0.5 * (np.sqrt(1.01) + np.linalg.norm(mu_good))
            gs, refused, rho = _server(attacked, limits, robust=True)
            m = _class_mean(gs, c)
            if m is not None:
                assert np.linalg.norm(m - mu_good) <= ROBUST_FACTOR * rho + 1e-9  # 2 s F rho with s = 1/2
                worst = max(worst, np.linalg.norm(m - mu_good) / (ROBUST_FACTOR * rho))
    assert worst > 0.9  # attacks just inside the screening come close to the bound: it is what limits them
    gs, _, rho = _server(_attack(honest, bad, c, cfg["shots"], far), limits, robust=True)
    assert _class_mean(gs, c) is None  # the far mean: the pair disagrees by > 2 F rho, the class is dropped
    assert np.linalg.norm(far - mu_good) > 2 * ROBUST_FACTOR * rho


def test_screening_drops_no_honest_contribution_on_openclipart_s_partition(federation):
    cfg, _, honest = federation
    gs, refused, rho = _server(honest, ClassLimits.of(cfg), robust=False)
    before = {c: len(parts) for c, parts in gs.by_class.items()}
    assert refused == {} and rho > 0 and gs.robust_filter() == []
    assert {c: len(parts) for c, parts in gs.by_class.items()} == before


@pytest.mark.parametrize("scatter", [False, True])
def test_claims_beyond_what_a_client_holds_are_refused(federation, scatter):
    cfg, plans, _ = federation
    f = _features()
    p = plans[0]
    stats = client_statistics(f[p.support_idx], p.support_y, p.classes, scatter=scatter)
    limits = ClassLimits.of(cfg)
    check = lambda s: wire.class_stats_of(wire.arrays_record(s), DIM, scatter, limits=limits)  # noqa: E731
    check(stats)  # an honest client passes
    bad = {
        "at most 5": {**stats, "counts": stats["counts"] + np.float32(1)},
        "whole numbers": {**stats, "counts": stats["counts"] - np.float32(0.5)},
        "unit-length": {**stats, "sums": stats["sums"] * 3},
    }
    if scatter:
        bad["a mean and spread"] = {**stats, "factor": stats["factor"] * 3}
    for reason, s in bad.items():
        with pytest.raises(ValueError, match=reason):
            check(s)
    more = client_statistics(np.concatenate([f[p.support_idx]] * 2), np.concatenate([p.support_y, p.support_y + 5]),
                             np.concatenate([p.classes, p.classes + 100]), scatter=scatter)
    with pytest.raises(ValueError, match="at most 5"):  # 10 classes of a client of 5
        check(more)
    raw = ClassLimits.of({**cfg, "feature_norm": "none"})
    wire.class_stats_of(wire.arrays_record(bad["unit-length"]), DIM, scatter, limits=raw)  # raw features: no unit ball


def test_class_limits_follow_the_declared_partition():
    base = {"shots": 5, "classes_per_client": 4, "feature_norm": "l2", "quantity_skew": 0.0}
    assert ClassLimits.of({**base, "partition": "kshot"}) == ClassLimits(5, 20, 4, True)
    assert ClassLimits.of({**base, "partition": "natural", "feature_norm": "none"}) == ClassLimits(5, None, None, False)
    assert ClassLimits.of({**base, "partition": "dirichlet"}) == ClassLimits(20, 20, None, True)
    skew = ClassLimits.of({**base, "partition": "dirichlet", "quantity_skew": 0.5})
    assert skew.per_client == skew.per_class == int(np.ceil(20 * np.exp(5 * 0.5 - 0.125)))  # 216


def test_the_class_sizes_are_openclipart_s():
    """Where OpenClipart is on this machine (never fetched by the tests), the fixture's plans are the real ones."""
    from fedfit.data.cache import cache_root
    from fedfit.data.openclipart import ENV, PACKAGE, SUBDIR

    places = [os.environ.get(ENV), f"/{SUBDIR}", str(cache_root() / "debs" / PACKAGE / SUBDIR)]
    if not any(p and Path(p).is_dir() for p in places):
        pytest.skip("openclipart-png is not on this machine (`fedfit partition` fetches it)")
    from fedfit.federated import plans, source

    cfg = load_config(overrides={**OPENCLIPART, "device": "cpu"})
    assert source(cfg).counts().tolist() == OPENCLIPART_SIZES
    real, ours = plans(cfg)[:cfg["num_clients"]], _default_plans(cfg)
    for a, b in zip(real, ours):
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_array_equal(a.support_idx, b.support_idx)


def test_on_the_default_federation_a_claim_moves_a_class_mean_at_most_by_its_owners_share():
    """The default federation (scikit-learn's digits, bundled: 20 clients x 5 classes x 5 shots), its real
    partition: in the class with the fewest holders, a client claiming 50,000 images is refused (a kshot client
    holds at most 5 of a class); claiming the 5 it may hold with a mean anywhere in the unit ball, it moves the
    class's global mean by at most its share of the class's images times the ball's diameter under FedAvg
    (5 / (5 x holders) x 2, 1% margin), and by at most ROBUST_FACTOR x rho under a robust strategy (or the class
    is dropped)."""
    from fedfit.federated import plans, source

    cfg = load_config(overrides={"device": "cpu"})
    assert (cfg["dataset"], cfg["partition"], cfg["num_clients"], cfg["classes_per_client"], cfg["shots"]) == \
        ("digits", "kshot", 20, 5, 5)
    labels = source(cfg).labels
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((int(labels.max()) + 1, DIM))
    f = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True) \
        + rng.standard_normal((len(labels), DIM)) / np.sqrt(DIM)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    clients = plans(cfg)[:cfg["num_clients"]]
    honest = [(p.client_id, client_statistics(f[p.support_idx], p.support_y, p.classes, scatter=False))
              for p in clients]
    limits = ClassLimits.of(cfg)
    holders = {}
    for p in clients:
        for c in p.classes:
            holders.setdefault(int(c), []).append(p.client_id)
    c = min(holders, key=lambda k: (len(holders[k]), k))
    n = len(holders[c])
    assert 2 <= n < cfg["num_clients"]
    bad = holders[c][-1]
    clean = _class_mean(_server(honest, limits, robust=False)[0], c)
    far = -clean / np.linalg.norm(clean)
    for robust in (False, True):
        gs, refused, _ = _server(_attack(honest, bad, c, CLAIM, far), limits, robust)
        assert list(refused) == [bad] and "at most 5" in refused[bad]
    share = cfg["shots"] / (cfg["shots"] * n)
    for u in [far] + [v / np.linalg.norm(v) for v in rng.standard_normal((5, DIM))]:
        attacked = _attack(honest, bad, c, cfg["shots"], u)  # the 5 images it may hold, at the unit sphere
        fedavg, refused, _ = _server(attacked, limits, robust=False)
        assert refused == {}
        assert np.linalg.norm(_class_mean(fedavg, c) - clean) <= share * 2 * 1.01
        gs, _, rho = _server(attacked, limits, robust=True)
        m = _class_mean(gs, c)
        assert m is None or np.linalg.norm(m - clean) <= ROBUST_FACTOR * rho + share * 2 * 1.01
