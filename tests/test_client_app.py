"""The ClientApp's message handling without an engine: decode, train, encode, error feedback, local state."""
import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedfit.config import load_config
from fedfit.federated import initial_state


@pytest.fixture(autouse=True)
def task_identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


def _cfg(**over):
    return load_config(overrides={"dataset": "digits", "image_size": 32, "num_clients": 2, "clients_per_round": 1,
                                  "local_steps": 2, "queries": 5, "device": "cpu", **over})


def _context():
    return Context(run_id=1, node_id=5, node_config={"partition-id": 1, "num-partitions": 2}, state=RecordDict(),
                   run_config={})


def _train_message(strategy, flat):
    from strategies.base import state_record

    class G:  # two nodes: Flower's sampler waits until num_clients nodes are connected
        def get_node_ids(self):
            return [5, 6]

    (msg,) = strategy.configure_train(1, state_record(flat), ConfigRecord({"server-round": 1}), G())
    return msg


def _call(app, msg, ctx):
    return app(msg, ctx)


@pytest.mark.parametrize("codec, delta", [("fp32", False), ("int8", True), ("topk:0.1", True)])
def test_train_reply_decodes_on_the_server(codec, delta):
    from clients.client_app import make_client_app
    from strategies import create_strategy
    from strategies.base import state_of

    cfg = _cfg(codec_up=codec, delta=delta)
    layout, flat = initial_state(cfg)
    s = create_strategy(cfg, layout.size)
    msg = _train_message(s, flat)
    ctx = _context()
    reply = _call(make_client_app(cfg), msg, ctx)
    assert not reply.has_error(), reply.error if reply.has_error() else ""
    assert reply.content["metrics"]["num-examples"] == 25
    out, _ = s.aggregate_train(1, [reply])
    assert out is not None and not s.rejected
    got = state_of(out)
    if codec == "fp32":
        assert not np.array_equal(got, flat)
    if codec == "topk:0.1":
        changed = np.flatnonzero(got != flat)
        assert 0 < changed.size <= int(round(0.1 * layout.size)) + 1
        assert "ef" in ctx.state  # the residual stays with the client for the next round


def test_local_only_keeps_its_own_state_and_sends_nothing():
    from clients.client_app import make_client_app
    from strategies import create_strategy

    cfg = _cfg(method="local-only")
    layout, flat = initial_state(cfg)
    s = create_strategy(cfg, layout.size)
    msg = _train_message(s, flat)
    assert len(msg.content["arrays"]) == 0  # the server sends no state
    ctx = _context()
    reply = _call(make_client_app(cfg), msg, ctx)
    assert len(reply.content["arrays"]) == 0
    own = ctx.state["local"]["state"].numpy()
    assert own.shape == flat.shape and not np.array_equal(own, flat)


def test_a_client_that_raises_becomes_an_error_reply_not_a_crash():
    from clients.client_app import make_client_app

    cfg = _cfg()
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=5,
                  message_type=MessageType.TRAIN)  # no arrays: malformed
    with pytest.raises(Exception):
        _call(make_client_app(cfg), msg, _context())
