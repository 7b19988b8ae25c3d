"""Server side without an engine: metering to the byte, aggregation, validation of replies."""
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fedfit.config import load_config
from strategies import create_strategy
from strategies.base import state_of, state_record
from strategies.metering import MeteredGrid, payload_bytes, wire_bytes

N = 20_546  # FiT state on Lite0 with an LDA head: 20,544 FiLM + 2 mixing weights


@pytest.fixture(autouse=True)
def task_identity():
    from flwr.supercore.task_identity import TaskIdentity  # what a Flower process sets before messages exist

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


class FakeGrid:
    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return self.nodes


def _strategy(**over):
    cfg = load_config(overrides={"num_clients": 3, "clients_per_round": 3, **over})
    return create_strategy(cfg, N)


def _train_messages(strategy, flat, nodes=(11, 12, 13)):
    msgs = list(strategy.configure_train(1, state_record(flat), ConfigRecord({"server-round": 1}), FakeGrid(nodes)))
    return {m.metadata.dst_node_id: m for m in msgs}


def _reply(to, arrays: dict, n_examples):
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": n_examples})})
    return Message(content, reply_to=to)


def test_wire_bytes_equal_what_flower_pushes_to_the_byte(rng):
    from flwr.app.message import remove_content_from_message
    from flwr.common.serde import message_to_proto
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
    from flwr.supercore.inflatable.inflatable_utils import push_objects

    s = _strategy()
    msg = _train_messages(s, rng.normal(size=N).astype(np.float32))[11]
    pushed = []  # Flower's own push path, with a recording transport
    push_objects(get_all_nested_objects(msg), lambda oid, content: pushed.append(len(oid) + len(content)),
                 keep_objects=True)
    expected = (message_to_proto(remove_content_from_message(msg)).ByteSize() + get_object_tree(msg).ByteSize()
                + sum(pushed))
    assert wire_bytes(msg) == expected
    assert payload_bytes(msg) == 4 * N
    assert 4 * N < wire_bytes(msg) <= 1.05 * 4 * N  # one packed array: framing well under 5%


def test_many_small_arrays_cost_more_than_one_packed_array(rng):
    from fedfit.backbones import create_backbone
    from fedfit.adapters import create_adapter

    film = create_adapter("film", create_backbone(device="cpu"))
    # random values: Flower sends identical chunks once (all-zero betas of equal size would dedupe)
    named = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in film.state_arrays().items()}  # 36 tensors
    many = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in named.items()})}),
                   dst_node_id=1, message_type=MessageType.TRAIN)
    one = Message(RecordDict({"arrays": state_record(np.concatenate([v.ravel() for v in named.values()]))}),
                  dst_node_id=1, message_type=MessageType.TRAIN)
    assert payload_bytes(many) == payload_bytes(one) == 4 * 20_544
    assert wire_bytes(many) - payload_bytes(many) > 5 * (wire_bytes(one) - payload_bytes(one))


def test_metered_grid_counts_both_directions(rng):
    s = _strategy()
    msgs = _train_messages(s, np.zeros(N, np.float32))

    class EchoGrid(FakeGrid):
        def send_and_receive(self, messages, timeout=None):
            return [_reply(m, {"x": np.ones(N, np.float32)}, 5) for m in messages]

    g = MeteredGrid(EchoGrid([11, 12, 13]))
    replies = g.send_and_receive(list(msgs.values()))
    t = g.meter.take()
    assert [x.direction for x in t] == ["down"] * 3 + ["up"] * 3
    assert all(x.kind == "train" for x in t)
    assert sum(x.wire for x in t if x.direction == "down") == sum(wire_bytes(m) for m in msgs.values())
    assert sum(x.wire for x in t if x.direction == "up") == sum(wire_bytes(r) for r in replies)
    assert g.meter.take() == []


def test_fedavg_is_the_weighted_mean(rng):
    s = _strategy()
    msgs = _train_messages(s, np.zeros(N, np.float32))
    xs = [rng.normal(size=N).astype(np.float32) for _ in range(3)]
    w = [5, 10, 25]
    replies = [_reply(msgs[n], {"x": x}, k) for n, x, k in zip((11, 12, 13), xs, w)]
    arrays, _ = s.aggregate_train(1, replies)
    expected = sum(k * x.astype(np.float64) for k, x in zip(w, xs)) / sum(w)
    np.testing.assert_allclose(state_of(arrays), expected, rtol=1e-5, atol=1e-6)


def test_fedprox_with_mu_zero_equals_fedavg(rng):
    xs = [rng.normal(size=N).astype(np.float32) for _ in range(3)]
    out = []
    for strat in ("fedavg", "fedprox"):
        s = _strategy(strategy=strat, prox_mu=0.0)
        msgs = _train_messages(s, np.zeros(N, np.float32))
        if strat == "fedprox":
            assert all(m.content["config"]["proximal-mu"] == 0.0 for m in msgs.values())
        arrays, _ = s.aggregate_train(1, [_reply(msgs[n], {"x": x}, 7) for n, x in zip((11, 12, 13), xs)])
        out.append(state_of(arrays))
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize("bad", ["wrong-key", "wrong-shape", "nan", "bad-weight", "wrong-dtype", "no-arrays"])
def test_malformed_replies_are_rejected_not_aggregated(rng, bad):
    s = _strategy()
    msgs = _train_messages(s, np.zeros(N, np.float32))
    good = [rng.normal(size=N).astype(np.float32) for _ in range(2)]
    replies = [_reply(msgs[11], {"x": good[0]}, 5), _reply(msgs[12], {"x": good[1]}, 5)]
    x = rng.normal(size=N).astype(np.float32)
    w = 5
    arrays = {"x": x}
    if bad == "wrong-key":
        arrays = {"weights": x}
    elif bad == "wrong-shape":
        arrays = {"x": x[:-1]}
    elif bad == "nan":
        x[3] = np.nan
    elif bad == "bad-weight":
        w = -1
    elif bad == "wrong-dtype":
        arrays = {"x": x.astype(np.float64)}
    hostile = _reply(msgs[13], arrays, w)
    if bad == "no-arrays":
        hostile = Message(RecordDict({"metrics": MetricRecord({"num-examples": 5})}), reply_to=msgs[13])
    out, _ = s.aggregate_train(1, replies + [hostile])
    np.testing.assert_allclose(state_of(out), (good[0] + good[1]) / 2, rtol=1e-5, atol=1e-6)
    assert [n for n, _ in s.rejected] == [13]


def test_all_replies_rejected_keeps_the_global_state(rng):
    s = _strategy()
    msgs = _train_messages(s, np.zeros(N, np.float32))
    out, _ = s.aggregate_train(1, [_reply(msgs[11], {"x": np.zeros(3, np.float32)}, 5)])
    assert out is None


def test_lossy_codecs_and_deltas_decode_on_the_server(rng):
    base = rng.normal(size=N).astype(np.float32)
    new = base + 0.01 * rng.normal(size=N).astype(np.float32)
    s = _strategy(codec_up="int8", delta=True)
    msgs = _train_messages(s, base)
    from fedfit.codec import create_codec

    enc = create_codec("int8").encode(new - base)
    out, _ = s.aggregate_train(1, [_reply(msgs[11], enc, 5)])
    np.testing.assert_allclose(state_of(out), new, atol=create_codec("int8").error_bound(new - base) + 1e-6)
