"""Byte metering of the Flower messages a run really sends: every message sized with
``fedfit.wire.wire_bytes`` (what Flower's transport sends) and ``payload_bytes`` (the raw arrays).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from flwr.app import Message
from flwr.supercore.inflatable.inflatable_object import no_object_id_recompute

from fedfit import atomic
from fedfit.wire import METRICS, NODE_TRAFFIC, PARTITION, ROUND, payload_bytes, wire_bytes


@dataclass
class Transfer:
    """One metered message. direction: 'down' (server -> client) or 'up'; kind: train / evaluate / global;
    round: the server round the message belongs to (its config's "server-round", else the meter's
    ``round`` when it was sent: hello messages)."""

    direction: str
    node_id: int
    kind: str
    wire: int
    payload: int
    round: int = 0


@dataclass
class Meter:
    """Accumulates ``Transfer``s; ``take()`` returns and clears them (one round at a time). ``round``: the
    round a message without a "server-round" in its config is counted in (the loop sets it).

    ``journal``: a file that holds the transfers not yet taken (one JSON line each, appended as metered; the
    file rewritten by ``take``), so that what a run sent for a round it never recorded (killed mid-round)
    is still known when it resumes (``journal_bytes``). Appends are flushed, not fsynced: a killed process
    loses none, a machine that loses power may lose the last ones."""

    transfers: list[Transfer] = field(default_factory=list)
    round: int = 0
    journal: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, direction: str, msg: Message, kind: str, shared: dict | None = None,
            server_round: int | None = None) -> Transfer:
        node = msg.metadata.dst_node_id if direction == "down" else msg.metadata.src_node_id
        t = Transfer(direction, int(node), kind, wire_bytes(msg, shared), payload_bytes(msg),
                     self.round if server_round is None else server_round)
        with self._lock:
            self.transfers.append(t)
            if self.journal is not None:
                with open(self.journal, "a", encoding="utf-8") as f:
                    f.write(_journal_line(t))
        return t

    def peek(self) -> list[Transfer]:
        """The transfers so far, kept (the simulated clock reads a round's bytes before it ends)."""
        with self._lock:
            return list(self.transfers)

    def take(self, upto: int | None = None) -> list[Transfer]:
        """The transfers of rounds <= ``upto`` (None: all), removed from the meter; a later round's (the
        next round's training, sent together with this round's evaluation) stay for that round."""
        with self._lock:
            if upto is None:
                out, self.transfers = self.transfers, []
            else:
                out = [t for t in self.transfers if t.round <= upto]
                self.transfers = [t for t in self.transfers if t.round > upto]
            if self.journal is not None and (out or self.journal.exists()):
                atomic.write_bytes(self.journal, "".join(map(_journal_line, self.transfers)).encode())
        return out


def _journal_line(t: Transfer) -> str:
    return json.dumps([t.direction, t.kind, t.round, t.wire]) + "\n"


def journal_bytes(path: Path) -> int:
    """Wire bytes of the transfers in a meter's journal (0 without one; a torn last line is left out)."""
    if not path.is_file():
        return 0
    n = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            n += int(json.loads(line)[3])
        except (ValueError, IndexError, TypeError):
            continue
    return n


def total(transfers: Iterable[Transfer], direction: str, field_: str = "wire", kinds: tuple[str, ...] | None = None) -> int:
    return sum(getattr(t, field_) for t in transfers if t.direction == direction and (kinds is None or t.kind in kinds))


def message_key(msg: Message, reply: bool = False) -> tuple[int, str]:
    """(node, message type) of a message, or with ``reply`` of a reply (its sender): how a reply is matched
    to its message when one exchange sends a node a training and an evaluation message."""
    node = msg.metadata.src_node_id if reply else msg.metadata.dst_node_id
    return int(node), str(msg.metadata.message_type)


class NodeCounts:
    """What the SuperNodes counted themselves (``clients.ledger``): the latest ledger totals each partition
    reported, per Flower run of this fedfit run (a resumed run is a new Flower run), and the wire size of
    the reply that carried them (not in its own totals; it belongs to the Flower run that pulled it).
    ``by_run()``: {Flower run id: bytes the SuperNodes received and sent in it}; ``total()``: all of them;
    None when no reply carried a ledger (simulation)."""

    def __init__(self) -> None:
        self.latest: dict[int, tuple[dict[str, int], str, int]] = {}  # partition -> (run: bytes, reply's run, its bytes)

    def read(self, reply: Message, wire: int) -> None:
        """Take (and remove) the ledger totals from ``reply``'s metrics; a malformed report is ignored."""
        if not reply.has_content() or METRICS not in reply.content:
            return
        metrics = reply.content[METRICS]
        keys = [k for k in list(metrics.keys()) if str(k).startswith(NODE_TRAFFIC + ".")]
        if not keys:
            return
        values = [metrics.pop(k) for k in keys]
        runs: dict[str, int] = {}
        try:
            for k, v in zip(keys, values):
                run, direction = k[len(NODE_TRAFFIC) + 1:].rsplit(".", 1)
                if direction not in ("rx", "tx") or isinstance(v, float) or int(v) < 0:
                    return
                runs[str(int(run))] = runs.get(str(int(run)), 0) + int(v)
            part = int(metrics[PARTITION])
        except (TypeError, ValueError, KeyError):
            return
        before = self.latest.get(part)
        if part >= 0 and (before is None or sum(runs.values()) >= sum(before[0].values())):
            self.latest[part] = (runs, str(int(reply.metadata.run_id)), int(wire))

    def by_run(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for runs, reply_run, wire in self.latest.values():
            for run, n in runs.items():
                out[run] = out.get(run, 0) + n
            out[reply_run] = out.get(reply_run, 0) + wire
        return out

    def total(self) -> int | None:
        return sum(self.by_run().values()) if self.latest else None

    def state(self) -> dict[str, Any]:
        """Checkpointed: a resumed ServerApp keeps the reports of nodes that never answer it again."""
        return {"latest": [[p, runs, run, wire] for p, (runs, run, wire) in sorted(self.latest.items())]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.latest = {int(p): (dict(runs), str(run), int(wire)) for p, runs, run, wire in state["latest"]}


class MeteredGrid:
    """Wraps a Flower ``Grid``: every message sent and every reply received is metered.

    ``kind`` is taken from the message's ``config`` record ``phase`` when present, else its type; the
    round from its config's "server-round". One exchange may send a node two messages of different
    types (a training and an evaluation message): a reply is matched by (node, message type)."""

    def __init__(self, grid, meter: Meter | None = None):
        self._grid = grid
        self.meter = meter or Meter()
        self.reply_wire: dict[tuple[int, str], int] = {}  # the last exchange's replies: (node, type) -> bytes
        self.nodes = NodeCounts()

    def __getattr__(self, name):
        return getattr(self._grid, name)

    @staticmethod
    def _kind(msg: Message) -> str:
        if msg.has_content() and "config" in msg.content and "phase" in msg.content["config"]:
            return str(msg.content["config"]["phase"])
        return msg.metadata.message_type

    @staticmethod
    def _round(msg: Message) -> int | None:
        if msg.has_content() and "config" in msg.content and ROUND in msg.content["config"]:
            return int(msg.content["config"][ROUND])
        return None

    @staticmethod
    def exchange_kind(messages: list[Message]) -> str:
        """What an exchange carries: its messages' kinds in order of appearance, joined ("train+evaluate")."""
        return "+".join(dict.fromkeys(MeteredGrid._kind(m) for m in messages)) or "none"

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        sent, shared = {}, {}  # shared: one RecordDict sent to many clients is sized once
        with no_object_id_recompute():  # ... and hashed once (Flower's own switch for this)
            for m in messages:
                kind, rnd = sent[message_key(m)] = self._kind(m), self._round(m)
                self.meter.add("down", m, kind, shared, server_round=rnd)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.reply_wire = {}
        for r in replies:
            key = message_key(r, reply=True)
            kind, rnd = sent.get(key, (r.metadata.message_type, None))
            self.reply_wire[key] = self.meter.add("up", r, kind, server_round=rnd).wire
            self.nodes.read(r, self.reply_wire[key])
        return replies
