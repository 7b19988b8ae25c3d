"""One client's side of a round (no Flower engine): the four methods and the client's codec path."""
import numpy as np
import pytest
import torch

from fedfit.config import load_config
from fedfit.federated import ClientWork, initial_state


def _cfg(**over):
    base = {"dataset": "digits", "image_size": 32, "num_clients": 4, "clients_per_round": 2, "local_steps": 3,
            "queries": 5, "device": "cpu"}
    return load_config(overrides={**base, **over})


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


def test_class_sums_and_global_nearest_mean():
    cfg = _cfg()
    _, flat = initial_state(cfg)
    works = [ClientWork(cfg, i) for i in range(4)]
    sums, counts = {}, {}
    for w in works:
        ids, cnt, tot = w.class_sums(flat)
        assert tot.shape == (5, 1280) and np.all(cnt == 5)
        for i, c, s in zip(ids, cnt, tot):
            sums[i] = sums.get(i, 0) + s
            counts[i] = counts.get(i, 0) + c
    ids = np.array(sorted(sums))
    means = np.stack([sums[i] / counts[i] for i in ids])
    correct, seen = works[0].global_correct(flat, ids, means)
    assert seen == 25 and 0 < correct <= 25


def test_bad_partition_id_is_a_clear_error():
    with pytest.raises(ValueError, match="partition-id 9"):
        ClientWork(_cfg(new_users=0), 9)
