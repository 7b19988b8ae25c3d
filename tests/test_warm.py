"""Warm ClientApps (``clients.warm``, ``clients.app``): the thin ClientApp's messages answered by a worker
that keeps the model loaded give the same replies as fedfit's ClientApp in the same process, and a worker
that is missing or fails mid-message costs nothing but time (the message is handled locally)."""
import threading

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fedfit import wire
from fedfit.config import load_config
from fedfit.federated import initial_state
from strategies import create_strategy
from strategies.codec_layer import CodecGrid
from strategies.inline import InlineGrid
from strategies.sampling import GridView

TIMING = {"train_seconds", "eval_seconds", "seconds"}


@pytest.fixture(autouse=True)
def task_identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


def _cfg(tmp_path):
    return load_config(overrides={"dataset": "digits", "image_size": 32, "num_clients": 2, "clients_per_round": 2,
                                  "local_steps": 2, "queries": 5, "device": "cpu", "name": "w", "out_dir": str(tmp_path)})


@pytest.fixture
def worker(tmp_path):
    """A worker serving ``app`` on a socket in this process (a thread); yields a function that starts it."""
    from clients import warm

    stop, threads = threading.Event(), []

    def start(app, name="w.sock"):
        path, ready = str(tmp_path / name), threading.Event()
        t = threading.Thread(target=warm.serve, args=(path,), kwargs={"app": app, "ready": ready, "stop": stop},
                             daemon=True)
        t.start()
        threads.append(t)
        assert ready.wait(10) and warm.wait_for(path, 10)
        return path

    yield start
    stop.set()
    for t in threads:
        t.join(5)


def _exchange(app, cfg, flat):
    """Round 1's training of both clients and an evaluation of client 0, through the server's codec layer."""
    lay, _ = initial_state(cfg)
    inline = InlineGrid(app, cfg["num_clients"], node_seed=3)
    grid = CodecGrid(inline, "fp32", "fp32", False, lay.fingerprint, lay.size)
    nodes = inline.get_node_ids()
    msgs = list(create_strategy(cfg).configure_train(1, wire.state_record(flat), ConfigRecord({"phase": "train"}),
                                                     GridView(grid, nodes)))
    msgs.append(Message(RecordDict({"arrays": wire.state_record(flat), "config": ConfigRecord({"phase": "evaluate"})}),
                        dst_node_id=nodes[0], message_type=MessageType.EVALUATE))
    replies = grid.send_and_receive(msgs)
    assert grid.take_failures() == []
    out = {}
    for r in replies:
        key = (inline.node_partitions()[r.metadata.src_node_id], r.metadata.message_type)
        metrics = {k: v for k, v in r.content["metrics"].items() if k not in TIMING}
        arrays = wire.state_of(r.content["arrays"], lay.size) if "arrays" in r.content else None
        out[key] = (metrics, arrays)
    return out


def test_the_warm_worker_answers_as_the_clientapp_itself_does_and_a_missing_one_costs_only_time(
        tmp_path, worker, monkeypatch):
    import clients.client_app
    from clients.app import app as thin
    from clients.client_app import make_client_app

    cfg = _cfg(tmp_path)
    _, flat = initial_state(cfg)
    bound = make_client_app(cfg)
    local = _exchange(bound, cfg, flat)
    monkeypatch.setenv("FEDFIT_WARM_SOCKET", worker(bound))
    monkeypatch.setattr(clients.client_app, "app", None)  # the thin app must not fall back to a local app
    warm = _exchange(thin, cfg, flat)
    assert set(warm) == set(local) == {(0, "train"), (1, "train"), (0, "evaluate")}
    for key in local:
        assert warm[key][0] == local[key][0], key
        if local[key][1] is not None:
            assert np.array_equal(warm[key][1], local[key][1]), key
    # no worker at the socket: every message handled in this process, the same replies
    monkeypatch.setattr(clients.client_app, "app", bound)
    monkeypatch.setenv("FEDFIT_WARM_SOCKET", str(tmp_path / "none.sock"))
    alone = _exchange(thin, cfg, flat)
    assert {k: v[0] for k, v in alone.items()} == {k: v[0] for k, v in local.items()}


def test_a_worker_that_fails_mid_message_is_reported_and_keeps_serving(tmp_path, worker):
    from flwr.app import Context

    from clients import warm

    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    msg = Message(RecordDict({"config": ConfigRecord({"phase": "evaluate"})}), dst_node_id=1,
                  message_type=MessageType.EVALUATE)
    with pytest.raises(warm.WorkerUnavailable, match="cannot reach the worker"):
        warm.forward(str(tmp_path / "none.sock"), msg, ctx)
    calls = []

    def flaky(message, context):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the model failed to load")
        context.state["seen"] = ConfigRecord({"calls": len(calls)})
        return Message(RecordDict({"metrics": MetricRecord({"ok": 1})}), reply_to=message)

    path = worker(flaky, "flaky.sock")
    with pytest.raises(warm.WorkerUnavailable, match="closed"):
        warm.forward(path, msg, ctx)
    reply = warm.forward(path, msg, ctx)  # the worker goes on with the next message
    assert reply.content["metrics"]["ok"] == 1 and ctx.state["seen"]["calls"] == 2
