"""The seeds' other adapters, federated: every adapter end to end, personal state kept per client (no
leak between clients that share one model object) and never on the wire."""

import numpy as np
import pytest

from fedfit.client_state import ClientStateStore
from fedfit.config import load_config
from fedfit.federated import PERSONAL, ClientWork, initial_state, shared_model
from fedfit.results import read_rounds
from tests.tiny import TINY

BASE = {**TINY, "num_clients": 3, "clients_per_round": 2, "rounds": 1,
        "local_steps": 2, "queries": 5, "new_users": 1, "device": "cpu", "global_eval": False,
        "case_linear_steps": 50}


@pytest.fixture(autouse=True)
def _quiet():
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)


@pytest.mark.slow
@pytest.mark.parametrize("adapter, shared", [("case", 426_192), ("scale_shift", 3_155_168),
                                             ("scale_shift-kxk", 9_056), ("iciia", 51_200)])
def test_each_adapter_runs_federated(tmp_path, capsys, adapter, shared):
    from strategies.simulate import simulate

    cfg = load_config(overrides={**BASE, "adapter": adapter, "engine": "inline", "out_dir": str(tmp_path),
                                 "name": adapter, "global_eval": True})
    s = simulate(cfg)
    r0, r1 = read_rounds(tmp_path / adapter)
    assert s["shared_parameters"] == shared and s["failures"] == 0
    assert r1["clients"] == 2 and r1["bytes_up_payload"] == 2 * 4 * shared  # shared state only, fp32
    assert r1["acc_mean"] is not None and r1["new_acc_mean"] is not None and r1["global_acc"] is not None
    if adapter == "case":
        assert s["personal_parameters"] == 0  # UpperCaSE's linear head is refitted from zeros, never kept
        assert 0 <= r1["acc_extra"]["accuracy_linear"] <= 1
    if adapter == "iciia":
        assert s["personal_parameters"] == 5 * 5 * 1280  # 5 history images per class, D = 1280 features
    if adapter.startswith("scale_shift"):
        assert s["personal_parameters"] == 0
    out = capsys.readouterr().out
    assert f"{shared:,} parameters sent" in out
    kept = s["personal_parameters"]
    assert f"personal state per client: {f'{kept:,} numbers' if kept else 'none'}" in out  # printed, as counted


def _work(cfg, pid, store):
    return ClientWork(cfg, pid, store=store)


@pytest.mark.parametrize("adapter", ["case", "iciia"])
def test_no_leak_between_clients_that_share_one_model(tmp_path, adapter):
    cfg = load_config(overrides={**BASE, "adapter": adapter, "local_steps": 1, "case_linear_steps": 10})
    _, flat = initial_state(cfg)
    shared = ClientStateStore(tmp_path / "shared.sqlite")
    a, b = _work(cfg, 0, shared), _work(cfg, 1, shared)
    assert a.model is b.model  # one model object serves both clients
    runs = []
    for w, r in ((a, 1), (b, 1), (a, 2)):  # A, B, A in one process
        new, m = w.train(flat, r)
        ev, _ = w.evaluate(new, r)
        runs.append((new, m["train_loss"], ev))
    fresh = []
    for pid, rounds in ((0, (1, 2)), (1, (1,))):  # each client alone, in a store and a model of its own
        from fedfit import federated

        federated._MODELS.clear()
        w = _work(cfg, pid, ClientStateStore(tmp_path / f"alone{pid}.sqlite"))
        for r in rounds:
            new, m = w.train(flat, r)
            ev, _ = w.evaluate(new, r)
            fresh.append((pid, r, new, m["train_loss"], ev))
    by = {(p, r): (n, l, e) for p, r, n, l, e in fresh}
    for (new, loss, ev), key in zip(runs, [(0, 1), (1, 1), (0, 2)]):
        n2, l2, e2 = by[key]
        np.testing.assert_array_equal(new, n2)
        assert loss == l2
        assert {k: v for k, v in ev.items() if "seconds" not in k} == {k: v for k, v in e2.items() if "seconds" not in k}
    assert not shared_model(cfg).personal_state_arrays()  # nothing of any client left in the model
    assert all(not k.startswith("adapter/linear") for k in shared_model(cfg).state_arrays())


@pytest.mark.slow
def test_personal_state_is_never_on_the_wire(tmp_path):
    from flwr.common.serde import message_to_proto

    from clients.client_app import make_client_app
    from strategies.inline import InlineGrid
    from strategies.loop import run_federation

    cfg = load_config(overrides={**BASE, "adapter": "iciia", "out_dir": str(tmp_path), "name": "wire",
                                 "global_eval": True})
    sent = []

    class Sniffer(InlineGrid):
        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            sent.extend(message_to_proto(m).SerializeToString() for m in messages)
            replies = super().send_and_receive(messages, timeout=timeout)
            sent.extend(message_to_proto(r).SerializeToString() for r in replies)
            return replies

    from fedfit.federated import num_partitions

    run_federation(Sniffer(make_client_app(cfg), num_partitions(cfg)), cfg, progress=lambda s: None)
    store = ClientStateStore(tmp_path / "wire" / "clients.sqlite")
    personal = [a for p in store.partitions() for a in store.get_all(p, PERSONAL, 1 << 60).values()]
    assert personal and all(np.abs(a).max() > 0 for a in personal)  # ICIIA's history features
    wire_bytes = b"".join(sent)
    for a in personal:
        for row in np.asarray(a, np.float32).reshape(-1, 64):  # every 256-byte stretch with values in it
            if np.count_nonzero(row) >= 8:  # (runs of zeros from the ReLU are on the wire anyway)
                assert row.tobytes() not in wire_bytes


def test_case_evaluation_does_not_depend_on_the_clients_earlier_evaluations(tmp_path):
    """UpperCaSE's evaluation head is fitted from zeros every time (the reference's ``predict``): a
    client's round-2 evaluation after its round-1 evaluation (and training) equals that of a client
    evaluated for the first time, and its state store holds nothing of CaSE."""
    from fedfit import federated

    cfg = load_config(overrides={**BASE, "adapter": "case", "case_training": "uppercase", "case_linear_steps": 20})
    _, flat = initial_state(cfg)
    store = ClientStateStore(tmp_path / "a.sqlite")
    w = _work(cfg, 0, store)
    w.evaluate(flat, 1)
    w.train(flat, 2)
    seen, _ = w.evaluate(flat, 2)
    assert not [p for p in store.partitions() if store.get_all(p, PERSONAL, 1 << 60)]
    federated._MODELS.clear()
    first, _ = _work(cfg, 0, ClientStateStore(tmp_path / "b.sqlite")).evaluate(flat, 2)
    assert {k: v for k, v in seen.items() if "seconds" not in k} == {k: v for k, v in first.items() if "seconds" not in k}


def test_uppercase_training_updates_case_through_its_linear_heads_loss(monkeypatch):
    """``case_training = uppercase``: per task a linear head fitted from zero on the context features, then
    CaSE updated by that head's loss (the Naive Bayes head's mixing weights get no gradient); FiT's loop
    is the other choice and trains differently."""
    import fedfit.episodes as episodes

    calls = []
    real = episodes.fit_linear_head

    def spy(feats, labels, num_classes, steps=500, **kw):
        calls.append((feats.requires_grad, int(num_classes), steps))
        return real(feats, labels, num_classes, steps, **kw)

    monkeypatch.setattr(episodes, "fit_linear_head", spy)
    out = {}
    for mode in ("uppercase", "fit"):
        cfg = load_config(overrides={**BASE, "adapter": "case", "head": "lda", "case_training": mode,
                                     "local_steps": 2, "case_linear_steps": 30})
        layout, flat = initial_state(cfg)
        new, m = ClientWork(cfg, 0).train(flat, 1)
        assert m["train_steps"] == 2 and np.isfinite(m["train_loss"])
        delta = layout.unpack(new - flat)
        assert any(np.abs(v).max() > 0 for k, v in delta.items() if k.startswith("adapter/"))
        out[mode] = (new, delta["head/e"])
    assert calls == [(False, 5, 30)] * 2  # one linear head per task, on features without gradients
    assert np.array_equal(out["uppercase"][1], [0, 0])  # the Naive Bayes head is not in UpperCaSE's loss
    assert np.abs(out["fit"][1]).max() > 0 and not np.array_equal(out["uppercase"][0], out["fit"][0])
    with pytest.raises(Exception, match="needs adapter = case"):
        load_config(overrides={"case_training": "uppercase"})
