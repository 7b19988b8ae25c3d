"""The ClientApp and its mods, driven through the server's codec layer on an in-process grid."""
import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from fedfit import wire
from fedfit.config import load_config
from fedfit.federated import initial_state
from strategies import create_strategy
from strategies.codec_layer import CodecGrid, for_strategy
from strategies.inline import InlineGrid
from strategies.sampling import GridView


@pytest.fixture(autouse=True)
def task_identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


@pytest.fixture(autouse=True)
def _out_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFIT_TEST_OUT", str(tmp_path))


def _cfg(**over):
    import os

    return load_config(overrides={"dataset": "digits", "image_size": 32, "num_clients": 2, "clients_per_round": 1,
                                  "local_steps": 2, "queries": 5, "device": "cpu", "name": "t",
                                  "out_dir": os.environ["FEDFIT_TEST_OUT"], **over})


def _store(cfg):
    from fedfit.client_state import open_store

    return open_store(f"{cfg['out_dir']}/t/clients.sqlite")


def _exchange(cfg, flat, phase="train", node=0, layout=None):
    """One message from the server's codec layer to client ``node`` of an InlineGrid; returns
    (valid replies, failures, the inline grid)."""
    from clients.client_app import make_client_app

    lay, _ = initial_state(cfg)
    inline = InlineGrid(make_client_app(cfg), cfg["num_clients"], node_seed=7)
    grid = CodecGrid(inline, cfg["codec_down"], cfg["codec_up"], cfg["delta"], layout or lay.fingerprint, lay.size)
    dst = inline.get_node_ids()[node]
    if phase == "train":
        s = create_strategy(cfg)
        msgs = s.configure_train(1, wire.state_record(flat), ConfigRecord({"phase": "train"}), GridView(grid, [dst]))
    else:
        msgs = [Message(RecordDict({"arrays": wire.state_record(flat), "config": ConfigRecord({"phase": phase})}),
                        dst_node_id=dst, message_type=MessageType.EVALUATE)]
    replies = grid.send_and_receive(msgs)
    return replies, grid.take_failures(), inline


@pytest.mark.parametrize("codec, delta", [("fp32", False), ("int8", True), ("topk:0.1", True)])
def test_train_reply_decodes_on_the_server(codec, delta):
    cfg = _cfg(codec_up=codec, delta=delta)
    layout, flat = initial_state(cfg)
    (reply,), failures, inline = _exchange(cfg, flat)
    assert failures == []
    m = reply.content["metrics"]
    assert m["num-examples"] == 25 and m["partition-id"] == 0 and m["layout"] == layout.fingerprint
    got = wire.state_of(reply.content["arrays"], layout.size)
    assert not np.array_equal(got, flat)
    if codec == "topk:0.1":
        changed = np.flatnonzero(got != flat)
        assert 0 < changed.size <= int(round(0.1 * layout.size)) + 1
        res = _store(cfg).get(0, "ef", below=10)  # the residual stays with the client for the next round
        assert res is not None and res.shape == flat.shape and np.abs(res).max() > 0
    assert set(for_strategy(reply).content["metrics"].keys()) == {"num-examples"}


def test_local_only_keeps_its_own_state_and_sends_nothing():
    cfg = _cfg(method="local-only")
    layout, flat = initial_state(cfg)
    from clients.client_app import make_client_app

    inline = InlineGrid(make_client_app(cfg), 2, node_seed=3)
    grid = CodecGrid(inline, "fp32", "fp32", False, layout.fingerprint, layout.size)
    dst = inline.get_node_ids()[1]
    s = create_strategy(cfg)
    from flwr.app import ArrayRecord

    msgs = list(s.configure_train(1, ArrayRecord(), ConfigRecord({"phase": "train"}), GridView(grid, [dst])))
    (reply,) = grid.send_and_receive(msgs)
    assert len(msgs[0].content["arrays"]) == 0 and len(reply.content["arrays"]) == 0  # no state either way
    own = _store(cfg).get(1, "local", below=10)
    assert own.shape == flat.shape and not np.array_equal(own, flat)


def test_a_client_that_raises_replies_with_a_one_line_error():
    cfg = _cfg(new_users=0)
    from clients.client_app import make_client_app

    app = make_client_app(cfg)
    inline = InlineGrid(app, 2, node_configs=[{"partition-id": 0}, {"partition-id": 9}], node_seed=1)
    layout, flat = initial_state(cfg)
    grid = CodecGrid(inline, "fp32", "fp32", False, layout.fingerprint, layout.size)
    s = create_strategy(cfg)
    msgs = s.configure_train(1, wire.state_record(flat), ConfigRecord({"phase": "train"}), GridView(grid, inline.nodes))
    replies = grid.send_and_receive(msgs)
    (f,) = grid.take_failures()
    assert len(replies) == 1 and f.kind == "error" and f.node == inline.nodes[1]
    assert f.reason == "ValueError: partition-id 9 outside 0..1 (2 clients + 0 new users)"


def test_a_client_refuses_a_server_running_another_model():
    cfg = _cfg()
    layout, flat = initial_state(cfg)
    replies, (f,), _ = _exchange(cfg, flat, layout=layout.fingerprint + 1)
    assert replies == [] and f.kind == "error" and "layout fingerprint" in f.reason


def test_hello_names_the_partition():
    from clients.client_app import make_client_app
    from strategies.nodes import NodeDirectory

    inline = InlineGrid(make_client_app(_cfg(num_clients=3)), 3,
                        node_configs=[{"partition-id": 2}, {"partition-id": 0}, {"partition-id": 2}], node_seed=5)
    class Plain:  # a grid that does not know the partitions (Flower's engine, a SuperLink): it must ask
        get_node_ids, send_and_receive = inline.get_node_ids, inline.send_and_receive

    d = NodeDirectory(3)
    d.discover(Plain(), timeout=5, settle=0.3)  # partition 1 never answers: stop 0.3 s after the last new node
    assert inline.delivered == 3  # one hello each
    assert d.by_partition == {2: inline.nodes[0], 0: inline.nodes[1]}
    assert d.refused == [(inline.nodes[2], "partition-id 2 is already held by another node")]
    own = NodeDirectory(3)
    own.discover(inline, timeout=5, settle=0.3)  # fedfit's engines placed the partitions themselves: no message
    assert inline.delivered == 3 and own.by_partition == d.by_partition and own.refused == d.refused


def test_client_side_dp_clips_the_update():
    cfg = _cfg(dp="client", dp_clip=0.01, lr=0.05, local_steps=3)
    layout, flat = initial_state(cfg)
    (reply,), failures, _ = _exchange(cfg, flat)
    assert failures == []
    update = wire.state_of(reply.content["arrays"]) - flat
    assert 0 < np.linalg.norm(update) <= 0.01 * (1 + 1e-5)


def test_evaluate_reports_accuracy_and_class_statistics():
    cfg = _cfg(codec_down="fp16")
    layout, flat = initial_state(cfg)
    from clients.client_app import make_client_app

    inline = InlineGrid(make_client_app(cfg), 2, node_seed=2)
    grid = CodecGrid(inline, "fp16", "fp32", False, layout.fingerprint, layout.size)
    msgs = [Message(RecordDict({"arrays": wire.state_record(flat),
                                "config": ConfigRecord({"phase": "evaluate", "global-eval": True})}),
                    dst_node_id=n, message_type=MessageType.EVALUATE) for n in inline.nodes]
    replies = grid.send_and_receive(msgs)
    assert len(replies) == 2 and not grid.take_failures()
    stats = wire.class_stats_of(replies[0].content["stats"], 1280, queries=True)
    assert stats["class_ids"].shape == (5,) and np.all(stats["counts"] == 5) and stats["sums"].shape == (5, 1280)
    assert stats["query_features"].shape == (25, 1280) and set(stats["query_labels"]) == set(stats["class_ids"])
    assert 0 <= replies[0].content["metrics"]["accuracy"] <= 1  # the client decoded the fp16 downlink first
    assert set(msgs[0].content["arrays"].keys()) == {"x"} and msgs[0].content["arrays"]["x"].dtype == "float16"


def test_a_stock_flower_strategy_drives_fedfits_client_app():
    """A user's own ServerApp: Flower's FedAvg.start with the initial state as one float32 array and
    none of fedfit's keys. fedfit's ClientApp answers in its terms (the state under the same name, no
    codec), so two rounds train and evaluate with no error reply."""
    from flwr.app import Array, ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    from clients.client_app import make_client_app

    cfg = _cfg(local_steps=2)
    layout, flat = initial_state(cfg)
    grid = InlineGrid(make_client_app(cfg), 3, node_seed=3)
    result = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=3).start(
        grid=grid, initial_arrays=ArrayRecord({"film": Array(flat)}), num_rounds=2)
    new = result.arrays["film"].numpy()
    assert new.shape == flat.shape and new.dtype == np.float32 and np.abs(new - flat).max() > 0
    assert set(result.train_metrics_clientapp) == {1, 2} and "train_loss" in result.train_metrics_clientapp[2]
    assert 0 < result.evaluate_metrics_clientapp[2]["accuracy"] <= 1
