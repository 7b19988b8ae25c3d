"""Faults: crashed, dead and slow clients (Ray), simulated dropouts and stragglers, poisoned clients."""
import json

import numpy as np
import pytest
from fedfit.results import read_rounds

from fedfit.config import load_config
from fedfit.faults import fault_draw, hostile_clients, poisoned_update
from tests.tiny import TINY

BASE = {**TINY, "local_steps": 2, "queries": 5, "new_users": 0, "global_eval": False}


@pytest.fixture(autouse=True)
def _quiet_flower():
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)


def _rounds(run) -> list[dict]:
    return read_rounds(run)


def test_a_client_that_raises_one_that_dies_and_one_too_slow_are_counted_and_the_run_goes_on(tmp_path, ray_head):
    from strategies.simulate import simulate
    from tests.faulty import make_faulty_app

    cfg = load_config(overrides={**BASE, "num_clients": 5, "clients_per_round": 5, "rounds": 2, "timeout_s": 20,
                                 "out_dir": str(tmp_path), "name": "faulty", "ray_address": ray_head})
    summary = simulate(cfg, client_app=make_faulty_app(cfg, round_=1, sleep_s=300))
    r0, r1, r2 = _rounds(tmp_path / "faulty")
    by_client = {f["client"]: f for f in r1["failures"]}
    assert by_client[1]["kind"] == "error" and by_client[1]["reason"] == "RuntimeError: client 1 broke"
    assert by_client[2]["kind"] == "error" and "client process died" in by_client[2]["reason"]
    assert by_client[3]["kind"] == "timeout" and "no reply within 20 s" in by_client[3]["reason"]
    assert r1["clients"] == 2 and r1["failed"] == 3
    assert r2["clients"] == 5 and r2["failed"] == 0  # the dead and the slow actor were replaced
    assert summary["failures"] == 3 and summary["last_round"]["round"] == 2


def test_simulated_dropouts_and_stragglers_are_seeded_and_counted_apart(tmp_path):
    from strategies.simulate import simulate

    opts = {**BASE, "num_clients": 4, "clients_per_round": 4, "rounds": 2, "engine": "inline", "dropout": 0.5,
            "out_dir": str(tmp_path), "local_steps": 1}
    s1 = simulate(load_config(overrides={**opts, "name": "d1"}))
    s2 = simulate(load_config(overrides={**opts, "name": "d2"}))
    r1, r2 = _rounds(tmp_path / "d1"), _rounds(tmp_path / "d2")
    drops = [[f["client"] for f in r["failures"] if f["kind"] == "dropout"] for r in r1]
    assert drops == [[f["client"] for f in r["failures"] if f["kind"] == "dropout"] for r in r2]  # seeded
    assert sum(map(len, drops)) > 0 and all(r["failed"] == 0 for r in r1)  # injected: not failures
    assert r1[1]["clients"] == 4 - len(drops[1])
    cfg = load_config(overrides={**opts, "dropout": 0.0, "straggler": 0.3, "straggler_delay_s": 2.0})
    delays = [fault_draw(cfg, r, p)[1] for r in range(1, 20) for p in range(6)]
    assert set(delays) == {0.0, 2.0} and 0.15 < np.mean([d > 0 for d in delays]) < 0.45
    assert s1["failures"] == s2["failures"] == 0 and s1["injected"] > 0


def test_a_runs_failures_replayed_in_training_and_evaluation(tmp_path):
    """``replay_failures``: the clients that failed in a round of another run (a deployment's kills) fail here in
    the same round and phase; replaying a run's own dropouts gives its results again."""
    from strategies.simulate import simulate

    from fedfit.config import ConfigError

    opts = {**BASE, "num_clients": 4, "clients_per_round": 4, "rounds": 2, "engine": "inline", "out_dir": str(tmp_path),
            "local_steps": 1}
    simulate(load_config(overrides={**opts, "name": "src", "dropout": 0.5}))
    simulate(load_config(overrides={**opts, "name": "replay", "replay_failures": str(tmp_path / "src")}))
    src, rep = _rounds(tmp_path / "src"), _rounds(tmp_path / "replay")

    def failed(rows):
        return [sorted((f["phase"], f["client"]) for f in r["failures"]) for r in rows]

    assert failed(rep) == failed(src) and sum(map(len, failed(src))) > 0
    assert [r["acc_mean"] for r in rep] == [r["acc_mean"] for r in src]
    assert all("replayed failure of round" in f["reason"] for r in rep for f in r["failures"])
    # a deployment's evaluation failure (a killed node's timeout) fails the same client's evaluation here
    (tmp_path / "dep").mkdir()
    rows = [{"round": 0, "failures": []},
            {"round": 1, "failures": [{"client": 2, "phase": "evaluate", "kind": "timeout", "reason": "no reply"},
                                      {"client": -1, "phase": "train", "kind": "skipped", "reason": "x"}]}]
    (tmp_path / "dep" / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    simulate(load_config(overrides={**opts, "name": "dep-sim", "replay_failures": str(tmp_path / "dep")}))
    sim = _rounds(tmp_path / "dep-sim")
    assert failed(sim) == [[], [("evaluate", 2)], []] and sim[1]["eval_clients"] == 3 and sim[2]["eval_clients"] == 4
    with pytest.raises(ConfigError, match="replay_failures = .*no rounds.jsonl"):  # before any work
        simulate(load_config(overrides={**opts, "name": "none", "replay_failures": str(tmp_path / "nothing")}))
    assert not (tmp_path / "none").exists()


def test_hostile_clients_are_a_seeded_fraction():
    cfg = load_config(overrides={"num_clients": 20, "poison_fraction": 0.2})
    h = hostile_clients(cfg)
    assert len(h) == 4 and h == hostile_clients(cfg) and h == sorted(h)
    assert h != hostile_clients({**cfg, "seed": 1})
    assert hostile_clients({**cfg, "poison_fraction": 0.0}) == []


@pytest.mark.parametrize("attack", ["scale", "signflip", "noise", "nan"])
def test_attacks(attack, rng):
    cfg = load_config(overrides={"poison": attack, "poison_scale": 100.0})
    u = rng.normal(scale=0.01, size=1000).astype(np.float32)
    bad = poisoned_update(cfg, u, 1, 3)
    if attack == "scale":
        np.testing.assert_allclose(bad, 100 * u, rtol=1e-6)
    elif attack == "signflip":
        np.testing.assert_array_equal(bad, -u)
    elif attack == "noise":
        assert 50 * u.std() < bad.std() < 200 * u.std() and abs(np.corrcoef(bad, u)[0, 1]) < 0.2
    else:
        assert np.isnan(bad).all()


@pytest.mark.parametrize("attack, codec", [("scale", "int8"), ("nan", "fp32"), ("nan", "int8")])
def test_a_poisoned_client_is_sent_on_the_wire_and_nan_is_rejected(tmp_path, attack, codec):
    from strategies.simulate import simulate

    cfg = load_config(overrides={**BASE, "num_clients": 5, "clients_per_round": 5, "rounds": 1, "engine": "inline",
                                 "poison_fraction": 0.2, "poison": attack, "codec_up": codec, "delta": True,
                                 "out_dir": str(tmp_path), "name": "p"})
    (hostile,) = hostile_clients(cfg)
    summary = simulate(cfg)
    _, r1 = _rounds(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "config.json").read_text())["hostile_clients"] == [hostile]
    if attack == "nan":
        (f,) = r1["failures"]
        assert f["client"] == hostile and f["kind"] == "rejected" and r1["clients"] == 4
        assert summary["failures"] == 1
    else:
        assert r1["clients"] == 5 and r1["failed"] == 0  # accepted: only a robust strategy can tell


def test_an_exchange_flower_could_not_push_costs_its_clients_not_the_run(tmp_path, monkeypatch):
    """Flower's push of an exchange fails half-way (ObjectPushError, as after a SuperLink restart under load):
    the replies of the messages it registered are pulled, the others time out, the run goes on and says so."""
    from flwr.supercore.inflatable.inflatable_utils import ObjectPushError
    from uuid import uuid4

    from clients.client_app import make_client_app
    from fedfit.federated import num_partitions
    from strategies import push_errors
    from strategies.inline import InlineGrid
    from strategies.loop import run_federation

    class HalfPushed(InlineGrid):  # the 3rd exchange: only the first half of its messages reach the nodes
        calls, waiting = 0, {}

        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            self.calls += 1
            if self.calls != 3:  # no reply is late in the others, however loaded the machine
                return super().send_and_receive(messages, timeout=None)
            for m in messages:
                m.metadata.__dict__["_message_id"] = str(uuid4())
            for m in messages[: len(messages) // 2]:
                reply = self._deliver(m)
                reply.metadata.__dict__["_reply_to_message_id"] = m.metadata.message_id
                self.waiting[m.metadata.message_id] = reply
            raise ObjectPushError("aaee14e1", 1, "session")

        def pull_messages(self, ids):
            return [self.waiting.pop(i) for i in list(ids) if i in self.waiting]

    monkeypatch.setattr(push_errors, "POLL_S", 0.05)
    cfg = load_config(overrides={**BASE, "num_clients": 4, "clients_per_round": 4, "rounds": 3, "timeout_s": 1,
                                 "engine": "inline", "out_dir": str(tmp_path), "name": "pushed"})
    lines = []
    summary = run_federation(HalfPushed(make_client_app(cfg), num_partitions(cfg)), cfg, progress=lines.append)
    rounds = _rounds(tmp_path / "pushed")
    assert [r["round"] for r in rounds] == [0, 1, 2, 3] and summary["push_errors"] == 1
    assert any("Flower could not push all of an exchange's 8 messages" in ln for ln in lines)
    # that exchange: the next round's 4 training messages first (pushed, answered), then 4 evaluations (lost)
    failed = [(f["phase"], f["kind"]) for r in rounds for f in r["failures"]]
    assert failed == [("evaluate", "timeout")] * 4
    assert [r["clients"] for r in rounds[1:]] == [4, 4, 4]
