"""A deployed SuperNode's own byte ledger (``clients.ledger``) and the server's reading of it
(``strategies.metering.NodeCounts``): a message is counted when it arrives, before any work, its reply
when it leaves; every reply carries the totals so far, and the server's total is what the node counted."""
import json

from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import make_client_app
from clients.ledger import ledger_path, totals
from fedfit import wire
from fedfit.config import load_config
from fedfit.wire import NODE_TRAFFIC, wire_bytes
from strategies.metering import NodeCounts

RUN = {"dataset": "digits", "image-size": 32, "num-clients": 4, "clients-per-round": 2, "name": "led"}


def _hello() -> Message:
    return Message(RecordDict({wire.CONFIG: ConfigRecord({wire.PHASE: wire.HELLO})}), dst_node_id=1,
                   message_type=MessageType.QUERY)


def _report(reply: Message) -> dict:
    """The ledger totals a reply carries: {"<run>.rx" | "<run>.tx": bytes}."""
    return {k[len(NODE_TRAFFIC) + 1:]: v for k, v in reply.content[wire.METRICS].items()
            if k.startswith(NODE_TRAFFIC + ".")}


def _context(tmp_path, **node) -> Context:
    return Context(run_id=7, node_id=1, node_config={"partition-id": 3, "state-dir": str(tmp_path / "node"), **node},
                   state=RecordDict(), run_config={**RUN, "out-dir": str(tmp_path / "runs")})


def test_a_deployed_node_counts_what_it_received_before_it_works_and_every_reply_carries_the_totals(tmp_path):
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0
    ctx = _context(tmp_path)
    path = ledger_path(load_config(overrides={k.replace("-", "_"): v for k, v in RUN.items()}), ctx)
    assert path == tmp_path / "node" / "led.node-3.traffic"
    seen_at_work = []

    def working(msg, context, call_next):  # the handler's turn: what the ledger holds by then
        seen_at_work.append(totals(path))
        return call_next(msg, context)

    app = make_client_app(mods=(working,))  # deployed: reads the run config, keeps the ledger
    m1, m2 = _hello(), _hello()
    r1 = app(m1, ctx)
    s1 = wire_bytes(r1)  # as sent, with its ledger record
    assert not r1.has_error() and seen_at_work == [{7: {"rx": wire_bytes(m1), "tx": 0}}]
    assert _report(r1) == {"7.rx": wire_bytes(m1), "7.tx": 0}  # this reply not in its own totals
    r2 = app(m2, ctx)
    s2 = wire_bytes(r2)
    assert _report(r2) == {"7.rx": wire_bytes(m1) + wire_bytes(m2), "7.tx": s1}
    both = {7: {"rx": wire_bytes(m1) + wire_bytes(m2), "tx": s1 + s2}}
    assert totals(path) == both

    counts = NodeCounts()  # the server: the latest report per partition plus the reply that carried it
    counts.read(r1, s1)
    counts.read(r2, s2)
    assert _report(r2) == {} and wire_bytes(r2) < s2  # taken off before any strategy sees the reply
    assert counts.total() == wire_bytes(m1) + wire_bytes(m2) + s1 + s2 == sum(both[7].values())
    r3 = app(_hello(), ctx)
    s3 = wire_bytes(r3)
    counts.read(r3, s3)
    assert counts.total() == sum(totals(path)[7].values())  # the ledger's tx holds r3 (sent), its report does not
    stale = Message(RecordDict({wire.METRICS: MetricRecord({wire.PARTITION: 3, f"{NODE_TRAFFIC}.7.rx": 1,
                                                            f"{NODE_TRAFFIC}.7.tx": 1})}),
                    dst_node_id=1, message_type=MessageType.QUERY)
    counts.read(stale, 10)  # an older report (fewer bytes) does not replace a newer one
    assert counts.total() == sum(totals(path)[7].values())
    assert counts.by_run() == {"7": counts.total()}  # per Flower run (a resumed run is another one)
    resumed = NodeCounts()  # checkpointed: a resumed ServerApp keeps what nodes reported to the last one
    resumed.load_state(counts.state())
    assert resumed.latest == counts.latest

    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert [(ln[1], ln[4]) for ln in lines] == [("rx", "query"), ("tx", "query")] * 3
    assert all(a[3] <= b[3] for a, b in zip(lines, lines[1:]))  # when, in order
    before = totals(path)
    with open(path, "a") as f:  # a line torn by a kill is skipped
        f.write('[7, "rx", 12')
    assert totals(path) == before


def test_a_simulated_client_keeps_no_ledger_and_a_bad_report_is_ignored(tmp_path):
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0
    cfg = load_config(overrides={"dataset": "digits", "image_size": 32, "num_clients": 4, "clients_per_round": 2,
                                 "name": "sim", "out_dir": str(tmp_path)})
    reply = make_client_app(cfg)(_hello(), _context(tmp_path))
    assert not reply.has_error() and _report(reply) == {}
    assert not list(tmp_path.rglob("*.traffic"))
    counts = NodeCounts()
    counts.read(reply, 100)
    assert counts.total() is None  # simulation: nothing counted on the nodes, summary says null
    reply.content[wire.METRICS][f"{NODE_TRAFFIC}.7.rx"] = -5.5
    counts.read(reply, 100)
    assert counts.total() is None and _report(reply) == {}
