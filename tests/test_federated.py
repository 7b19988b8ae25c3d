"""One client's side of a round (no Flower engine): the four methods and the client's codec path."""
import numpy as np
import pytest
import torch

from fedfit.config import load_config
from fedfit.federated import ClientWork, initial_state
from tests.tiny import TINY, tiny_config


def _cfg(**over):
    return tiny_config(**{"local_steps": 3, "device": "cpu", **over})


def test_fit_trains_film_and_head_only(rng):
    cfg = _cfg(head="lda")
    layout, flat = initial_state(cfg)
    assert layout.size == 20_544 + 2  # FiLM + LDA mixing weights
    w = ClientWork(cfg, 0)
    new, m = w.train(flat, server_round=1)
    assert m["train_steps"] == 3 and m["num-examples"] == 25 and m["train_loss"] > 0
    assert new.shape == flat.shape and not np.array_equal(new, flat)
    ev, _ = w.evaluate(new)
    assert 0 <= ev["accuracy"] <= 1 and ev["num-examples"] == 25


def test_head_only_sends_only_the_mixing_weights():
    cfg = _cfg(method="head-only", head="lda")
    layout, flat = initial_state(cfg)
    assert layout.size == 2 and np.allclose(flat, [1.0, 1.0])
    new, _ = ClientWork(cfg, 1).train(flat, 1)
    assert new.shape == (2,)
    cfg = _cfg(method="head-only")  # the default ProtoNets head has nothing to train or send
    layout, flat = initial_state(cfg)
    assert layout.size == 0
    new, m = ClientWork(cfg, 1).train(flat, 1)
    assert new.shape == (0,) and m["train_steps"] == 0


def test_full_sends_every_backbone_weight():
    cfg = _cfg(method="full", local_steps=1)
    layout, flat = initial_state(cfg)
    assert layout.size > 3_000_000  # all Lite0 weights (+ the head's)
    w = ClientWork(cfg, 2)
    stats = {k: v.clone() for k, v in w.model.backbone.model.state_dict().items() if "running" in k}
    new, _ = w.train(flat, 1)
    assert np.abs(new - flat).max() > 0
    after = w.model.backbone.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats.items())  # norm layers stay in eval mode
    initial_state(cfg)  # reset: the shared backbone is restored to its pretrained weights
    np.testing.assert_array_equal(initial_state(cfg)[1], flat)


def test_fedprox_term_pulls_towards_the_global_state():
    cfg = _cfg(local_steps=5, lr=0.05)
    _, flat = initial_state(cfg)
    w = ClientWork(cfg, 0)
    free, _ = w.train(flat, 1)
    prox, _ = w.train(flat, 1, prox_mu=100.0)
    same, _ = w.train(flat, 1, prox_mu=0.0)
    np.testing.assert_array_equal(free, same)  # mu = 0 is plain local training
    assert np.linalg.norm(prox - flat) < np.linalg.norm(free - flat)


@pytest.mark.parametrize("head", ["lda", "qda", "protonets"])
def test_global_head_from_client_statistics_equals_the_head_fitted_on_the_union(head):
    """FiT's global accuracy without pooling features: the clients' additive statistics give the same
    head (to 1e-4) as the configured head fitted on the union of their support features."""
    from fedfit.federated import temperature
    from fedfit.global_head import GlobalStatistics
    from fedfit.heads import create_head

    cfg = _cfg(head=head, local_steps=2)
    layout, flat = initial_state(cfg)
    flat, _ = ClientWork(cfg, 0).train(flat, 1)  # a trained adapter and mixing weights, not the initial ones
    works = [ClientWork(cfg, i) for i in range(4)]
    gs = GlobalStatistics(1280, scatter=head != "protonets")
    feats, labels, q_feats, q_labels = [], [], [], []
    for w in works:
        _, stats = w.evaluate(flat, class_stats=True)
        alone = w.statistics(flat)  # the "stats" exchange: the same numbers without the query set
        for k in alone:
            np.testing.assert_allclose(alone[k], stats[k], rtol=1e-5, atol=1e-4)
        gs.add(w.pid, stats)
        q_feats.append(stats["query_features"])
        q_labels.append(stats["query_labels"])
        w.load(flat)
        with torch.no_grad():
            feats.append(w.model.embed_images(w.data.support_x).double())
        labels.append(w.data.classes[w.data.support_y])
    e = layout.unpack(flat).get("head/e")
    got = gs.head(head, e, cfg["protonets_temperature"])
    union, union_y = torch.cat(feats), np.concatenate(labels)
    ids = np.unique(union_y)
    np.testing.assert_array_equal(got.class_ids, ids)
    ref_head = create_head(head, **({"temperature": temperature(cfg["protonets_temperature"])}
                                    if head == "protonets" else {})).double()
    if e is not None:
        with torch.no_grad():
            ref_head.e.copy_(torch.as_tensor(e))
    q = torch.as_tensor(np.concatenate(q_feats), dtype=torch.float64)
    with torch.no_grad():
        ref = ref_head(union, torch.as_tensor(np.searchsorted(ids, union_y)), q, len(ids)).numpy()
    mine = got.logits(q)
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    truth = np.concatenate(q_labels)
    acc, ref_acc = (got.predict(q) == truth).mean(), (ids[ref.argmax(1)] == truth).mean()
    assert abs(acc - ref_acc) <= 1e-4 and acc > 0.5


def test_scatter_factor_costs_rows_not_a_dense_matrix():
    """LDA / QDA statistics: (C + n - C) x d numbers per client (128 KB at 5 x 5 shots, d = 1280),
    not a d x d scatter (6.5 MB)."""
    cfg = _cfg(head="lda")
    _, flat = initial_state(cfg)
    stats = ClientWork(cfg, 0).statistics(flat)
    assert stats["sums"].shape == (5, 1280) and stats["factor"].shape == (20, 1280)
    assert list(stats["factor_rows"]) == [4] * 5
    sent = sum(a.nbytes for a in stats.values())
    assert sent < 131_000 and sent < 1280 * 1280 * 4 / 50


def test_bad_partition_id_is_a_clear_error():
    with pytest.raises(ValueError, match="partition-id 9"):
        ClientWork(_cfg(new_users=0), 9)


def test_query_norm_is_the_raw_feature_scale_before_l2_normalization():
    """Evaluation reports the mean L2 norm of the query features before ``feature_norm``: with unit
    features the head sees norm 1, the report is the body's own scale (as a model without the norm gives)."""
    over = {**TINY, "num_clients": 2, "clients_per_round": 1, "queries": 3, "new_users": 0}
    work = ClientWork(load_config(overrides={**over, "feature_norm": "l2"}), 0)
    _, flat = initial_state(work.cfg)
    flat = flat * np.float32(1.1)  # FiLM scales x 1.1, shifts x 1.1: not the identity
    m, _ = work.evaluate(flat)
    raw = ClientWork(load_config(overrides={**over, "feature_norm": "none"}), 0)
    raw.load(flat)
    feats = raw.model.embed_images(raw.data.query_x)
    expected = float(feats.norm(dim=1).mean())
    assert m["query_norm"] == pytest.approx(expected, rel=1e-5)
    assert expected > 2  # not the unit norm the head sees
    assert m["query_norm"] != pytest.approx(float(raw.evaluate(initial_state(raw.cfg)[1])[0]["query_norm"]), rel=1e-3)
