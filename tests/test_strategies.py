"""Server side without an engine: metering to the byte, the codec layer (validation, decoding, deltas
against the full-precision global) and stock Flower strategies aggregating decoded float32 states."""
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from fedfit import wire
from fedfit.codecs import create_codec
from fedfit.config import load_config
from fedfit.layout import Layout
from strategies import create_strategy, dp
from strategies.codec_layer import CodecGrid, for_strategy
from fedfit.wire import payload_bytes, wire_bytes
from strategies.metering import MeteredGrid
from strategies.sampling import ClientSampler, GridView

N = 20_544  # FiT's FiLM state on Lite0 with the default ProtoNets head
FP = Layout.of({"x": np.zeros(N, np.float32)}).fingerprint


@pytest.fixture(autouse=True)
def task_identity():
    from flwr.supercore.task_identity import TaskIdentity  # what a Flower process sets before messages exist

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


class ScriptedGrid:
    """Replies computed by ``answer(message) -> Message | None`` (None: no reply)."""

    def __init__(self, nodes, answer=None):
        self.nodes, self.answer = list(nodes), answer

    def get_node_ids(self):
        return self.nodes

    def send_and_receive(self, messages, timeout=None):
        return [r for m in messages if (r := self.answer(m)) is not None]


def _reply(to: Message, arrays: dict, weight=5, layout=FP, **metrics) -> Message:
    content = RecordDict({"arrays": wire.arrays_record(arrays),
                          "metrics": MetricRecord({"num-examples": weight, "layout": layout, **metrics})})
    return Message(content, reply_to=to)


def _round(strategy="fedavg", answers=None, base=None, nodes=(11, 12, 13), rounds=1, **opts):
    """Run ``rounds`` training exchanges of ``strategy`` through the codec layer; ``answers[node](msg)``
    builds each node's reply; FedAvg takes McMahan et al.'s mean (``server_lr = 1``) unless told otherwise.
    Returns (final global, failures, strategy)."""
    if strategy == "fedavg":
        opts.setdefault("server_lr", 1.0)
    cfg = load_config(overrides={"num_clients": len(nodes), "clients_per_round": len(nodes), "strategy": strategy,
                                 **opts})
    s = create_strategy(cfg)
    grid = CodecGrid(ScriptedGrid(nodes, lambda m: answers[m.metadata.dst_node_id](m)), cfg["codec_down"],
                     cfg["codec_up"], cfg["delta"], FP, N)
    flat = np.zeros(N, np.float32) if base is None else base
    failures = []
    for r in range(1, rounds + 1):
        msgs = s.configure_train(r, wire.state_record(flat), ConfigRecord({"phase": "train"}), GridView(grid, nodes))
        replies = sorted(grid.send_and_receive(msgs), key=lambda m: m.metadata.src_node_id)
        failures += grid.take_failures()
        new, _ = s.aggregate_train(r, [for_strategy(m) for m in replies])
        if new is not None:
            flat = wire.aggregated_state(new, N)
    return flat, failures, s


def test_wire_bytes_equal_what_flower_pushes_to_the_byte(rng):
    from flwr.app.message import remove_content_from_message
    from flwr.common.serde import message_to_proto
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
    from flwr.supercore.inflatable.inflatable_utils import push_objects

    msg = Message(RecordDict({"arrays": wire.encode_record(create_codec("fp32"), rng.normal(size=N).astype(np.float32)),
                              "config": ConfigRecord({"phase": "train", "server-round": 1})}),
                  dst_node_id=11, message_type=MessageType.TRAIN)
    pushed = []  # Flower's own push path, with a recording transport
    push_objects(get_all_nested_objects(msg), lambda oid, content: pushed.append(len(oid) + len(content)),
                 keep_objects=True)
    expected = (message_to_proto(remove_content_from_message(msg)).ByteSize() + get_object_tree(msg).ByteSize()
                + sum(pushed))
    assert wire_bytes(msg) == expected
    assert payload_bytes(msg) == 4 * N
    assert 4 * N < wire_bytes(msg) <= 1.05 * 4 * N  # one packed array: framing well under 5%


def test_a_record_shared_by_many_messages_is_sized_once_to_the_same_bytes(rng):
    content = RecordDict({"arrays": wire.state_record(rng.normal(size=N).astype(np.float32)),
                          "config": ConfigRecord({"phase": "train", "server-round": 3})})
    msgs = [Message(content, dst_node_id=n, message_type=MessageType.TRAIN) for n in (5, 2**62 + 7, 123_456)]
    shared = {}
    assert [wire_bytes(m, shared) for m in msgs] == [wire_bytes(m) for m in msgs]
    assert len(shared) == 1


def test_many_small_arrays_cost_more_than_one_packed_array(rng):
    from fedfit.adapters import create_adapter
    from fedfit.backbones import create_backbone

    film = create_adapter("film", create_backbone(device="cpu"))
    # random values: Flower sends identical chunks once (all-zero betas of equal size would dedupe)
    named = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in film.state_arrays().items()}  # 36 tensors
    many = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in named.items()})}),
                   dst_node_id=1, message_type=MessageType.TRAIN)
    one = Message(RecordDict({"arrays": wire.state_record(np.concatenate([v.ravel() for v in named.values()]))}),
                  dst_node_id=1, message_type=MessageType.TRAIN)
    assert payload_bytes(many) == payload_bytes(one) == 4 * 20_544
    assert wire_bytes(many) - payload_bytes(many) > 5 * (wire_bytes(one) - payload_bytes(one))


def test_downlink_is_encoded_once_and_metered_in_both_directions(rng):
    flat = rng.normal(size=N).astype(np.float32)
    inner = ScriptedGrid([11, 12, 13], lambda m: _reply(m, {"x": flat}))
    metered = MeteredGrid(inner)
    grid = CodecGrid(metered, "int8", "fp32", False, FP, N)
    s = create_strategy(load_config(overrides={"num_clients": 3, "clients_per_round": 3}))
    msgs = list(s.configure_train(1, wire.state_record(flat), ConfigRecord({"phase": "train"}),
                                  GridView(grid, [11, 12, 13])))
    replies = grid.send_and_receive(msgs)
    t = metered.meter.take()
    assert [x.direction for x in t] == ["down"] * 3 + ["up"] * 3 and all(x.kind == "train" for x in t)
    assert len({id(m.content["arrays"]) for m in msgs}) == 1  # one encoding for every recipient
    assert set(msgs[0].content["arrays"].keys()) == {"q", "scale"}  # what went on the wire is int8
    assert msgs[0].content["config"]["state-size"] == N and msgs[0].content["config"]["layout"] == FP
    assert sum(x.wire for x in t if x.direction == "down") == sum(wire_bytes(m) for m in msgs)
    assert sum(x.payload for x in t if x.direction == "down") == 3 * (N + 4)
    assert len(replies) == 3 and all(wire.state_of(r.content["arrays"]).dtype == np.float32 for r in replies)


def test_fedavg_is_the_weighted_mean(rng):
    xs = {n: rng.normal(size=N).astype(np.float32) for n in (11, 12, 13)}
    w = {11: 5, 12: 10, 13: 25}
    out, failures, _ = _round("fedavg", {n: (lambda m, n=n: _reply(m, {"x": xs[n]}, w[n])) for n in xs})
    expected = sum(w[n] * xs[n].astype(np.float64) for n in xs) / sum(w.values())
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert failures == []


def test_server_lr_moves_the_global_that_many_times_the_mean_update(rng):
    """``strategy = fedavgm server_momentum = 0 server_lr = 5`` (or ``fedavg server_lr = 10``): the global
    moves 5 (10) times FedAvg's step; ``server_lr = -1`` is the strategy's own step (FedAvgM 1.0: FedAvg's
    mean; FedAdam 0.01); under DP FedAvg takes the mean as it is."""
    base = rng.normal(size=N).astype(np.float32)
    xs = {n: base + rng.normal(size=N).astype(np.float32) for n in (11, 12, 13)}
    answers = {n: (lambda m, n=n: _reply(m, {"x": xs[n]})) for n in xs}
    mean = np.mean([xs[n].astype(np.float64) for n in xs], axis=0)
    out, _, _ = _round("fedavgm", answers, base=base, server_momentum=0.0, server_lr=5.0)
    np.testing.assert_allclose(out, base + 5 * (mean - base), rtol=1e-4, atol=1e-4)
    out, _, _ = _round("fedavgm", answers, base=base, server_momentum=0.0)
    np.testing.assert_allclose(out, mean, rtol=1e-5, atol=1e-5)
    assert _round("fedadam", answers, base=base)[2].eta == 0.01
    out, _, s = _round("fedavg", answers, base=base, server_lr=10.0)  # FedAvg with a server step of 10
    np.testing.assert_allclose(out, base + 10 * (mean - base), rtol=1e-4, atol=1e-3)
    assert type(_round("fedavg", answers, base=base, server_lr=1.0)[2]).__name__ == "FedAvg"
    out, _, _ = _round("fedavg", answers, base=base, server_lr=-1.0)  # 2 x clients_per_round (3) x the mean update
    np.testing.assert_allclose(out, base + 6 * (mean - base), rtol=1e-4, atol=1e-3)
    from strategies.catalog import fedavg_step
    assert fedavg_step(load_config(overrides={"num_clients": 100, "clients_per_round": 50})) == 20.0
    assert fedavg_step(load_config(overrides={"num_clients": 40, "clients_per_round": 10, "dp": "server"})) == 1.0


def test_fedavgs_default_step_is_split_between_the_clients_lr_and_the_server():
    """Under FedAvg's default step the clients train at lr / 2 and the server moves 2 x clients_per_round
    times their mean update; an explicit server step, another strategy, DP or a method that aggregates
    nothing (the bounds) keeps lr as it is."""
    from fedfit.federated import client_lr, round_lr
    from strategies.catalog import fedavg_step

    cfg = load_config(overrides={"num_clients": 20, "clients_per_round": 5})
    assert cfg["lr"] == 0.0015 and client_lr(cfg, 1) == 0.00075 and fedavg_step(cfg) == 10.0
    assert client_lr(cfg, 4) == round_lr(cfg, 4) / 2 > 0
    for over in ({"server_lr": 5.0}, {"strategy": "fedprox"}, {"dp": "client"}, {"method": "local-only"},
                 {"method": "centralized"}):
        other = load_config(overrides={"num_clients": 20, "clients_per_round": 5, **over})
        assert client_lr(other, 1) == 0.0015, over
    assert fedavg_step(load_config(overrides={"num_clients": 20, "clients_per_round": 5, "server_lr": 5.0})) == 5.0
    with pytest.raises(ValueError, match="set server_lr = 1"):
        create_strategy(load_config(overrides={"strategy": "fedavg", "server_lr": 10.0, "dp": "server"}))


def test_fedprox_with_mu_zero_equals_fedavg(rng):
    xs = {n: rng.normal(size=N).astype(np.float32) for n in (11, 12, 13)}
    seen = []

    def answer(n):
        def f(m):
            seen.append(m.content["config"].get("proximal-mu"))
            return _reply(m, {"x": xs[n]}, 7)
        return f

    a, _, _ = _round("fedavg", {n: answer(n) for n in xs})
    b, _, _ = _round("fedprox", {n: answer(n) for n in xs}, prox_mu=0.0)
    np.testing.assert_array_equal(a, b)
    assert seen[3:] == [0.0] * 3  # FedProx tells the clients its mu


def test_heterogeneous_metric_keys_never_break_aggregation(rng):
    xs = {n: rng.normal(size=N).astype(np.float32) for n in (11, 12, 13)}
    extra = {11: {"train_loss": 0.5}, 12: {}, 13: {"train_loss": 0.7, "something_else": 1.0}}
    out, failures, _ = _round("fedavg", {n: (lambda m, n=n: _reply(m, {"x": xs[n]}, 5, **extra[n])) for n in xs})
    np.testing.assert_allclose(out, np.mean([xs[n] for n in xs], 0), rtol=1e-5, atol=1e-6)
    assert failures == []


@pytest.mark.parametrize("bad", ["wrong-key", "wrong-shape", "nan", "bad-weight", "wrong-dtype", "no-arrays",
                                 "other-layout", "error", "silent"])
def test_bad_replies_are_dropped_with_their_reason(rng, bad):
    good = {11: rng.normal(size=N).astype(np.float32), 12: rng.normal(size=N).astype(np.float32)}
    x = rng.normal(size=N).astype(np.float32)
    arrays, weight, layout = {"x": x}, 5, FP
    if bad == "wrong-key":
        arrays = {"weights": x}
    elif bad == "wrong-shape":
        arrays = {"x": x[:-1]}
    elif bad == "nan":
        x[3] = np.nan
    elif bad == "bad-weight":
        weight = -1
    elif bad == "wrong-dtype":
        arrays = {"x": x.astype(np.float64)}
    elif bad == "other-layout":  # same size, other names: another model
        layout = Layout.of({"y": np.zeros(N, np.float32)}).fingerprint

    def hostile(m):
        if bad == "no-arrays":
            return Message(RecordDict({"metrics": MetricRecord({"num-examples": 5, "layout": FP})}), reply_to=m)
        if bad == "error":
            return Message(Error(code=2, reason="ValueError: boom"), reply_to=m)
        if bad == "silent":
            return None
        return _reply(m, arrays, weight, layout)

    answers = {11: lambda m: _reply(m, {"x": good[11]}), 12: lambda m: _reply(m, {"x": good[12]}), 13: hostile}
    out, failures, _ = _round("fedavg", answers)
    np.testing.assert_allclose(out, (good[11] + good[12]) / 2, rtol=1e-5, atol=1e-6)
    assert [f.node for f in failures] == [13]
    kind = {"error": "error", "silent": "timeout"}.get(bad, "rejected")
    assert failures[0].kind == kind and failures[0].reason
    if bad == "other-layout":
        assert "layout fingerprint" in failures[0].reason


def test_all_replies_bad_leaves_the_global_state():
    base = np.full(N, 0.25, np.float32)
    out, failures, _ = _round("fedavg", {n: (lambda m: _reply(m, {"x": np.zeros(3, np.float32)})) for n in (11, 12, 13)},
                              base=base)
    np.testing.assert_array_equal(out, base)
    assert len(failures) == 3


def test_deltas_decode_against_the_full_precision_global(rng):
    base = rng.normal(size=N).astype(np.float32)
    new = base + 0.01 * rng.normal(size=N).astype(np.float32)
    enc = create_codec("int8").encode(new - base)
    out, _, _ = _round("fedavg", {n: (lambda m: _reply(m, enc)) for n in (11, 12, 13)}, base=base,
                       codec_up="int8", delta=True)
    np.testing.assert_allclose(out, new, atol=create_codec("int8").error_bound(new - base) + 1e-6)


def test_fedadam_with_a_lossy_downlink_and_zero_updates_keeps_the_global(rng):
    """The update is added to the server's full-precision state, not to the int8 copy clients got."""
    base = rng.normal(size=N).astype(np.float32)
    zero = create_codec("fp32").encode(np.zeros(N, np.float32))
    received = []

    def answer(m):
        received.append(create_codec("int8").decode({k: v.numpy() for k, v in m.content["arrays"].items()}, N))
        return _reply(m, zero)

    out, failures, _ = _round("fedadam", {n: answer for n in (11, 12, 13)}, base=base, rounds=10,
                              codec_down="int8", delta=True)
    assert failures == []
    lossy = np.abs(received[0] - base).max()
    assert lossy > 1e-2  # the clients really got a lossy int8 copy (half a quantization step ~0.02)...
    # ...and 10 rounds of zero updates moved nothing but float rounding: Flower's weighted mean multiplies
    # by w / total (1/3 here), a last-bit error that Adam's normalization amplifies to ~1e-6; adding
    # the update to the int8 copy instead moved this global by ~0.08 (the bug this pins)
    assert np.abs(out - base).max() < 1e-5 < lossy / 1000


@pytest.mark.parametrize("strategy", ["fedmedian", "fedtrimmedavg", "krum"])
def test_robust_strategies_aggregate_decoded_int8_states(rng, strategy):
    nodes = (11, 12, 13, 14, 15)
    xs = {n: rng.normal(size=N).astype(np.float32) for n in nodes}
    xs[15] = xs[15] * 100  # one hostile client
    int8 = create_codec("int8")
    encs = {n: int8.encode(x) for n, x in xs.items()}
    dec = np.stack([int8.decode(encs[n], N) for n in nodes]).astype(np.float64)
    out, failures, _ = _round(strategy, {n: (lambda m, n=n: _reply(m, encs[n])) for n in nodes}, nodes=nodes,
                              codec_up="int8", malicious=1, trim_beta=0.2)
    assert failures == []
    if strategy == "fedmedian":
        np.testing.assert_allclose(out, np.median(dec, 0), rtol=1e-5, atol=1e-6)
    elif strategy == "fedtrimmedavg":  # 20% of 5 clients cut at each end, per coordinate
        np.testing.assert_allclose(out, np.sort(dec, 0)[1:-1].mean(0), rtol=1e-5, atol=1e-6)
    else:  # Krum: the state with the smallest sum of squared distances to its n - f - 2 = 2 nearest others
        d = ((dec[:, None] - dec[None]) ** 2).sum(-1)
        scores = [np.sort(row)[1:3].sum() for row in d]
        np.testing.assert_allclose(out, dec[int(np.argmin(scores))], rtol=1e-6)
    assert np.abs(out).max() < 10  # the x100 update did not get through


def test_dp_server_side_clips_adds_noise_and_accounts_epsilon(rng):
    xs = {n: rng.normal(size=N).astype(np.float32) for n in (11, 12, 13)}
    out, failures, s = _round("fedavg", {n: (lambda m, n=n: _reply(m, {"x": xs[n]})) for n in xs}, rounds=3,
                              dp="server", dp_noise=1.0, dp_clip=0.5)
    assert failures == []
    eps = dp.epsilon(s)
    assert eps is not None and 0 < eps < float("inf")
    # noise std = z * clip / n = 1/6 per coordinate per round; three rounds of mean-of-clipped updates + noise
    assert 0.15 < float(np.std(out)) < 0.5


def test_sampling_is_a_function_of_seed_and_round():
    a, b = ClientSampler(0, 20), ClientSampler(0, 20)
    assert [a.train(r, 5) for r in range(1, 6)] == [b.train(r, 5) for r in range(1, 6)]
    assert a.train(1, 5) != ClientSampler(1, 20).train(1, 5)
    assert a.train(1, 5) == sorted(a.train(1, 5)) and len(set(a.train(1, 5))) == 5
    assert a.evaluate(3, 0) == list(range(20)) and len(a.evaluate(3, 7)) == 7


def test_the_pool_gives_an_actor_the_clients_it_served_before_in_order():
    from strategies.pool import _Pending

    msgs = list("abcdef")  # stand-ins for messages; home: the actor that served each one's client before
    home = {"b": 1, "d": 1, "e": 0}
    p = _Pending(msgs, home.get)
    assert [p.take(1), p.take(1), p.take(1), p.take(0), p.take(0), p.take(2)] == list("bdaecf")
    assert len(p) == 0
    with pytest.raises(IndexError):
        p.take(0)
    # training messages first (upper case here), each group still by home
    p = _Pending(list("aBcDe"), {"a": 0, "D": 1, "B": 0}.get, first=str.isupper)
    assert [p.take(0), p.take(0), p.take(0), p.take(1), p.take(1)] == list("BDace")


@pytest.mark.parametrize("options, says", [
    ({"dp": "server", "strategy": "fedmedian"}, "dp = server works with strategy = fedavg or fedprox"),
    ({"dp": "client", "dp_clipping": "adaptive"}, "dp_clipping = adaptive is Flower's server-side adaptive"),
])
def test_dp_options_that_cannot_be_honoured_are_refused_in_one_line(options, says):
    from fedfit.config import load_config
    from strategies import check_options

    with pytest.raises(ValueError, match=says):
        check_options(load_config(overrides=options))


def test_a_reply_larger_than_max_reply_mb_is_refused_before_decoding_and_still_metered(rng):
    """The operator's limit on one reply: node 12 pads its reply with 1 MB of extra bytes; with a limit of
    0.5 MB it is refused (counted with its size), the others decoded; the meter still counts what came."""
    flat = rng.normal(size=N).astype(np.float32)

    def answer(m):
        r = _reply(m, {"x": flat})
        if m.metadata.dst_node_id == 12:
            r.content["padding"] = ArrayRecord({"p": Array(np.zeros(250_000, np.float32))})
        return r

    metered = MeteredGrid(ScriptedGrid([11, 12, 13], answer))
    grid = CodecGrid(metered, "fp32", "fp32", False, FP, N, max_reply_bytes=500_000)
    s = create_strategy(load_config(overrides={"num_clients": 3, "clients_per_round": 3}))
    def messages(grid, nodes):
        return list(s.configure_train(1, wire.state_record(flat), ConfigRecord({"phase": "train"}), GridView(grid, nodes)))

    replies = grid.send_and_receive(messages(grid, [11, 12, 13]))
    failures = grid.take_failures()
    assert sorted(r.metadata.src_node_id for r in replies) == [11, 13]
    big = [t.wire for t in metered.meter.take() if t.direction == "up" and t.node_id == 12]
    assert big and big[0] > 1_000_000
    assert [(f.node, f.kind, f.reason) for f in failures] == [
        (12, "rejected", f"a reply of {big[0]:,} bytes, more than max_reply_mb = 0.5 allows")]
    # without the meter below, the codec layer sizes the reply itself, to the same bytes
    alone = CodecGrid(ScriptedGrid([12], answer), "fp32", "fp32", False, FP, N, max_reply_bytes=500_000)
    assert alone.send_and_receive(messages(alone, [12])) == [] and alone.take_failures()[0].reason == failures[0].reason
    with pytest.raises(ValueError, match="max_reply_mb"):
        load_config(overrides={"max_reply_mb": -1})
