"""The whole server loop over the real ClientApp on an in-process grid (no Ray): determinism,
failures counted with their reasons, a run no client can train stopping with the first error, DP."""

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict

from fedfit import wire
from fedfit.layout import Layout
from fedfit.results import read_rounds
from strategies.inline import InlineGrid
from strategies.loop import FederationError, run_federation
from tests.runs import timeless
from tests.tiny import tiny_config


@pytest.fixture(autouse=True)
def task_identity():
    import logging

    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    logging.getLogger("flwr").setLevel(logging.ERROR)


def _cfg(tmp_path, **over):
    return tiny_config(**{"rounds": 2, "local_steps": 2, "device": "cpu", "new_users": 1, "out_dir": str(tmp_path),
                          "global_eval": False, **over})


def _run(cfg, node_seed=None, hook=None):
    from clients.client_app import make_client_app

    from fedfit.federated import num_partitions

    grid = InlineGrid(make_client_app(cfg), num_partitions(cfg), node_seed=node_seed, hook=hook)
    return run_federation(grid, cfg, progress=lambda s: None), grid


def _rounds(cfg):
    return read_rounds(f"{cfg['out_dir']}/{cfg['name']}")




@pytest.mark.slow
def test_same_options_same_results_whatever_node_ids_flower_draws(tmp_path):
    a = _cfg(tmp_path, name="a", global_eval=True)
    _run(a, node_seed=1)
    b = {**a, "name": "b"}
    _run(b, node_seed=2)  # other node ids, other node order
    ra, rb = _rounds(a), _rounds(b)
    assert timeless(ra) == timeless(rb)
    assert ra[1]["trained"] == rb[1]["trained"] and set(ra[1]["per_client"]) == {str(p) for p in range(5)}
    assert ra[1]["new_users"] == 1 and ra[1]["new_acc_mean"] is not None
    assert all(x[k] == y[k] for x, y in zip(ra, rb) for k in x if k.endswith("_wire"))  # to the byte
    c = {**a, "name": "c", "seed": 1, "rounds": 1, "global_eval": False}
    _run(c, node_seed=1)
    rc = _rounds(c)
    assert rc[1]["trained"] != ra[1]["trained"] or rc[1]["train_loss"] != ra[1]["train_loss"]


@pytest.mark.slow
def test_a_reply_without_train_loss_is_aggregated(tmp_path):
    cfg = _cfg(tmp_path, name="loss", clients_per_round=4, rounds=1)

    def hook(pid, msg):
        if pid != 1 or msg.metadata.message_type != "train":
            return None
        from clients.client_app import make_client_app

        reply = make_client_app(cfg)(msg, _ctx(cfg, pid))
        metrics = {k: v for k, v in reply.content["metrics"].items() if k != "train_loss"}
        return Message(RecordDict({"arrays": reply.content["arrays"], "metrics": MetricRecord(metrics)}),
                       reply_to=msg)

    _run(cfg, hook=hook)
    r = _rounds(cfg)[1]
    assert r["clients"] == 4 and r["failed"] == 0 and "train_loss" not in r["per_client"]["1"]


@pytest.mark.slow
def test_a_rounds_update_norm_is_how_far_the_global_state_moved(tmp_path):
    """``update_norm`` of a round: the L2 norm of the aggregated change (here the final state minus the
    initial one); with FedAvg's mean (server_lr = 1) smaller than the clients' own update norms averaged when
    their updates disagree."""
    from fedfit.federated import initial_state
    from fedfit.results import read_run

    cfg = _cfg(tmp_path, name="norm", rounds=1, server_lr=1.0)
    _run(cfg)
    r = _rounds(cfg)
    layout, start = initial_state(cfg)
    final = layout.pack(read_run(tmp_path / "norm").final_state())
    assert r[0]["update_norm"] is None
    assert r[1]["update_norm"] == pytest.approx(float(np.linalg.norm(final.astype(np.float64) - start)), rel=1e-6)
    own = [c["update_norm"] for c in r[1]["per_client"].values() if "update_norm" in c]
    assert len(own) == 2 and 0 < r[1]["update_norm"] < np.mean(own)


def _ctx(cfg, pid):
    from flwr.app import Context

    return Context(run_id=1, node_id=1, node_config={"partition-id": pid}, state=RecordDict(), run_config={})


@pytest.mark.slow
def test_a_client_with_another_layout_is_refused_with_its_reason(tmp_path):
    cfg = _cfg(tmp_path, name="layout", clients_per_round=4, rounds=1)
    other = Layout.of({"not/film": np.zeros(20_544, np.float32)}).fingerprint  # same size, another model

    def hook(pid, msg):
        if pid != 2 or msg.metadata.message_type != "train":
            return None
        from clients.client_app import make_client_app

        reply = make_client_app(cfg)(msg, _ctx(cfg, pid))
        metrics = {**dict(reply.content["metrics"]), "layout": other}
        return Message(RecordDict({"arrays": reply.content["arrays"], "metrics": MetricRecord(metrics)}),
                       reply_to=msg)

    summary, _ = _run(cfg, hook=hook)
    r = _rounds(cfg)[1]
    assert r["clients"] == 3 and r["rejected"] == 1
    (f,) = r["failures"]
    assert f["client"] == 2 and f["kind"] == "rejected" and "layout fingerprint" in f["reason"]
    assert summary["failures"] == 1


@pytest.mark.slow
def test_a_run_no_client_can_train_stops_with_the_first_error(tmp_path):
    cfg = _cfg(tmp_path, name="broken")

    def hook(pid, msg):
        if msg.metadata.message_type == "train":
            from clients.mods import error_reply

            return error_reply(msg, f"RuntimeError: client {pid} is broken")
        return None

    with pytest.raises(FederationError, match=r"no client could train: RuntimeError: client \d is broken \(2 of 2"):
        _run(cfg, hook=hook)
    assert len(_rounds(cfg)) == 1  # round 0 (evaluation) was finished and kept


@pytest.mark.slow
def test_more_failures_than_max_failures_allows_stop_the_run_in_one_line(tmp_path):
    """An operator's limit: 2 of 4 clients failing to train is 50%; max_failures = 0.25 stops the run there
    (round 0 kept), the default 1.0 counts them and goes on."""
    from clients.mods import error_reply

    def hook(pid, msg):
        if msg.metadata.message_type == "train" and pid in (1, 3):
            return error_reply(msg, f"RuntimeError: client {pid} is broken")
        return None

    cfg = _cfg(tmp_path, name="limit", clients_per_round=4, rounds=1, max_failures=0.25)
    with pytest.raises(FederationError, match=r"^2 of 4 clients failed to train in one exchange, more than "
                                              r"max_failures = 0.25 allows \(first: RuntimeError: client 1 is broken\)$"):
        _run(cfg, hook=hook)
    assert [r["round"] for r in _rounds(cfg)] == [0]
    cfg = _cfg(tmp_path, name="default", clients_per_round=4, rounds=1)
    summary, _ = _run(cfg, hook=hook)
    assert summary["failures"] == 2 and _rounds(cfg)[1]["clients"] == 2


@pytest.mark.slow
def test_dp_reports_epsilon_every_round(tmp_path):
    cfg = _cfg(tmp_path, name="dp", dp="client", dp_noise=1.0, dp_clip=0.1, local_steps=1)
    summary, _ = _run(cfg)
    eps = [r["dp_epsilon"] for r in _rounds(cfg)]
    assert eps[0] is None or eps[0] == 0
    assert 0 < eps[1] < eps[2] < float("inf")
    assert summary["failures"] == 0
    # the server's sampling (2 of 4 without replacement), from dp-accounting directly: replace-one
    # neighbours, so one client moves the clipped sum by 2 x clip and the noise multiplier is z / 2
    from dp_accounting import dp_event, privacy_accountant, rdp

    ref = rdp.RdpAccountant(neighboring_relation=privacy_accountant.NeighboringRelation.REPLACE_ONE)
    ref.compose(dp_event.SampledWithoutReplacementDpEvent(4, 2, dp_event.GaussianDpEvent(0.5)), 2)
    assert _rounds(cfg)[2]["dp_epsilon_sampled"] == pytest.approx(ref.get_epsilon(1 / 4), rel=1e-9)
    ada = _cfg(tmp_path, name="ada", dp="server", dp_clipping="adaptive", dp_noise=1.0, dp_clip=0.1, local_steps=1)
    summary, _ = _run(ada)
    r = _rounds(ada)
    assert summary["failures"] == 0 and 0 < r[1]["dp_epsilon"] < r[2]["dp_epsilon"] < float("inf")
    assert r[2]["dp_epsilon_sampled"] > 0
    assert wire.WEIGHT == "num-examples"


def _replace_stats(cfg, pid, msg, change):
    """Partition ``pid``'s real evaluate reply with its "stats" arrays changed by ``change(arrays)``."""
    from clients.client_app import make_client_app

    reply = make_client_app(cfg)(msg, _ctx(cfg, pid))
    arrays = {k: v.numpy() for k, v in reply.content["stats"].items()}
    return Message(RecordDict({"metrics": reply.content["metrics"], "stats": wire.arrays_record(change(arrays))}),
                   reply_to=msg)


@pytest.mark.slow
def test_a_training_reply_claiming_more_examples_than_a_client_holds_is_refused(tmp_path):
    """FedAvg weighs each reply by its num-examples: one claiming more support images than a client of the
    run holds (5 classes x 5 shots = 25) would own the aggregate; it is rejected and counted."""
    from clients.client_app import make_client_app

    cfg = _cfg(tmp_path, name="weight", rounds=1, clients_per_round=4)

    def hook(pid, msg):
        if pid != 2 or msg.metadata.message_type != "train":
            return None
        reply = make_client_app(cfg)(msg, _ctx(cfg, pid))
        metrics = dict(reply.content["metrics"])
        return Message(RecordDict({"arrays": reply.content["arrays"],
                                   "metrics": MetricRecord({**metrics, wire.WEIGHT: 50_000})}), reply_to=msg)

    summary, _ = _run(cfg, hook=hook)
    (f,) = _rounds(cfg)[1]["failures"]
    assert f["client"] == 2 and f["kind"] == "rejected", f
    assert "num-examples 50000 is more than the 25 support images a client of this run holds" in f["reason"]
    assert _rounds(cfg)[1]["clients"] == 3 and summary["failures"] == 1


@pytest.mark.slow
def test_class_statistics_of_another_width_are_refused_and_the_run_goes_on(tmp_path):
    cfg = _cfg(tmp_path, name="width", rounds=1, global_eval=True)

    def hook(pid, msg):
        if pid != 2 or msg.metadata.message_type != "evaluate":
            return None
        return _replace_stats(cfg, pid, msg, lambda a: {**a, "sums": a["sums"][:, :-1],
                                                        "query_features": a["query_features"][:, :-1]})

    summary, _ = _run(cfg, hook=hook)
    rs = _rounds(cfg)
    assert len(rs) == 2 and all(r["global_acc"] is not None for r in rs)
    for r in rs:
        (f,) = r["failures"]
        assert f["client"] == 2 and f["kind"] == "rejected" and "feature width 1279, expected 1280" in f["reason"]
        assert r["global_clients"] == 3 and r["eval_clients"] == 3
    assert summary["failures"] == 2  # counted: the finished run exits 3


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fedavg", "fedmedian"])
def test_robust_strategies_keep_a_hostile_client_out_of_the_global_head(tmp_path, strategy):
    """A client that sends its class sums x 100 moves FedAvg's global class means freely; with a robust
    strategy its contributions are dropped and the global head is the honest clients' one. Raw features
    (feature_norm = none): with unit features such sums are refused by the claim check under every strategy
    (``test_claims_no_client_can_make_are_refused_under_fedavg_too``)."""
    cfg = _cfg(tmp_path, name=strategy, rounds=0, global_eval=True, strategy=strategy, num_clients=8,
               classes_per_client=8, new_users=0, clients_per_round=5,  # every client holds 8 of the 10 digits
               feature_norm="none")

    def hook(pid, msg):
        if pid != 3 or msg.metadata.message_type != "evaluate":
            return None
        return _replace_stats(cfg, pid, msg, lambda a: {**a, "sums": a["sums"] * 100})

    _run(cfg, hook=hook)
    hostile = _rounds(cfg)[0]
    clean = {**cfg, "name": strategy + "-clean"}
    _run(clean)
    honest = _rounds(clean)[0]
    assert hostile["failures"] == []  # raw features: no claim is beyond what a client can hold
    if strategy == "fedavg":
        assert hostile["global_dropped"] == [] and hostile["global_acc"] < honest["global_acc"] - 0.1
        assert hostile["global_unscreened"] is None
    else:
        assert {d["client"] for d in hostile["global_dropped"]} == {3} and len(hostile["global_dropped"]) == 8
        assert honest["global_dropped"] == [] and hostile["global_unscreened"] == 0
        assert abs(hostile["global_acc"] - honest["global_acc"]) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("what", ["count", "sums"])
def test_claims_no_client_can_make_are_refused_under_fedavg_too(tmp_path, what):
    """A client claiming 50,000 images of each of its classes (its class means unchanged), or class sums
    x 100 (class means outside the unit ball of l2 features), is refused with the reason and counted, and
    the global head is the other clients' - under FedAvg, which screens nothing (``global_head.ClassLimits``)."""
    cfg = _cfg(tmp_path, name=what, rounds=0, global_eval=True)
    claim = {"count": lambda a: {**a, "counts": np.full_like(a["counts"], 50_000),
                                 "sums": a["sums"] * (50_000 / a["counts"])[:, None]},
             "sums": lambda a: {**a, "sums": a["sums"] * 100}}[what]

    def hook(pid, msg):
        if pid != 2 or msg.metadata.message_type != "evaluate":
            return None
        return _replace_stats(cfg, pid, msg, claim)

    summary, _ = _run(cfg, hook=hook)
    r = _rounds(cfg)[0]
    (f,) = r["failures"]
    reason = "50000 images of one class; a client of this run holds at most 5" if what == "count" else "unit-length"
    assert f["client"] == 2 and f["kind"] == "rejected" and reason in f["reason"]
    assert r["global_clients"] == 3 and r["global_acc"] is not None and summary["failures"] == 1


@pytest.mark.slow
def test_fewer_nodes_than_partitions_start_at_once_and_say_which_are_missing(tmp_path, monkeypatch):
    """``flwr run`` with 4 SuperNodes for 4 clients + 1 new user used to wait out timeout_s (an hour) for
    the fifth node: now discovery ends when no new node has come for a few seconds, and the run says
    which partitions have no node and counts them absent."""
    from clients.client_app import make_client_app
    from strategies import nodes

    monkeypatch.setattr(nodes, "SETTLE_S", 0.5)
    cfg = _cfg(tmp_path, name="few", rounds=1, timeout_s=3600)
    lines = []
    grid = InlineGrid(make_client_app(cfg), 4)  # the 5th partition (the new user) has no node
    run_federation(grid, cfg, progress=lines.append)
    assert any("no node holds 1 new users' partitions (4)" in line and "new_users = 0" in line for line in lines)
    r = _rounds(cfg)[1]
    assert r["clients"] == 2 and {"client": 4, "phase": "evaluate", "kind": "absent",
                                  "reason": "no node holds this partition"} in r["failures"]


@pytest.mark.slow
def test_a_natural_owner_federation_on_an_image_folder_with_a_clients_layout(tmp_path):
    from tests.test_data import write_image

    root = tmp_path / "imgs"
    classes = ["cat", "dog", "fish"]
    for o, owner in enumerate(["ann", "ben", "cy", "dee"]):  # root/<client>/<class>/: 2 classes x 5 images each
        for cls in (classes[o % 3], classes[(o + 1) % 3]):
            for i in range(5):
                write_image(root / owner / cls / f"{i}.png", color=(60 * o, 40 * i, 200 - 60 * classes.index(cls)))
    cfg = _cfg(tmp_path, name="natural", dataset="imagefolder", data_root=str(root), partition="natural",
               num_clients=3, new_users=1, shots=2, queries=2, clients_per_round=2, rounds=1, local_steps=1,
               global_eval=True, cache_dir=str(tmp_path / "cache"))
    summary, _ = _run(cfg)
    r = _rounds(cfg)
    assert summary["failures"] == 0 and r[1]["clients"] == 2 and r[1]["new_users"] == 1
    assert set(r[1]["per_client"]) == {"0", "1", "2", "3"} and r[1]["global_classes"] == 3
