"""The server half of the codec layer: a wrapper around the Grid, below the strategy, above the meter.

Outgoing: every message's "arrays" record (the strategy's full-precision float32 state) is encoded
with ``codec_down`` - once per distinct record, however many clients receive it - and the config gets
the wire keys the client needs ("layout" fingerprint, "state-size"). The full-precision state each
node was sent is remembered.

Incoming: every reply is validated once, before any strategy sees it: an error reply, a missing
reply (timeout), a reply larger than the operator's ``max_reply_bytes`` (sized as metered, before
anything is decoded), a wrong layout fingerprint, bad metrics or ``num-examples``, undecodable or
non-finite arrays, class statistics or query features of the wrong width, shape or values, class
statistics claiming more than a client of the run can hold (``global_head.ClassLimits``) - each
becomes a ``Failure`` with its reason and the reply is dropped. Good training replies are decoded into float32 "state" records; with ``delta`` the
update is added to the full-precision state the server sent (not to its lossy downlink copy), so a
zero update leaves the global exactly where it was.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedfit import wire
from fedfit.codecs import create_codec
from strategies.metering import message_key


@dataclass
class Failure:
    """One client message that produced nothing usable. kind: error | rejected | timeout | dropout
    (a simulated fault, ``wire.INJECTED``)."""

    node: int
    phase: str
    kind: str
    reason: str


class CodecGrid:
    """``send_and_receive`` returns only valid replies (decoded); ``take_failures()`` the rest."""

    def __init__(self, grid, codec_down: str, codec_up: str, delta: bool, layout_fingerprint: int, state_size: int,
                 feature_dim: int | None = None, scatter: bool = False, class_limits=None, max_reply_bytes: int = 0):
        self._grid = grid
        self.codec_down, self.codec_up = create_codec(codec_down), create_codec(codec_up)
        self.delta, self.fingerprint, self.n, self.feature_dim = delta, layout_fingerprint, state_size, feature_dim
        self.scatter = scatter  # class statistics carry scatter factors (LDA / QDA global heads)
        self.class_limits = class_limits  # fedfit.global_head.ClassLimits: what a client can claim (None: unchecked)
        self.max_reply_bytes = max_reply_bytes  # the operator's limit on one reply's wire bytes (0: none)
        self._failures: list[Failure] = []

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def take_failures(self) -> list[Failure]:
        out, self._failures = self._failures, []
        return out

    # --- downlink -------------------------------------------------------------------------------
    def _encode(self, messages: list[Message]) -> dict[tuple[int, str], np.ndarray | None]:
        """Encode in place (each distinct content once); return (node, message type) -> full-precision
        state sent."""
        done: dict[int, np.ndarray | None] = {}
        sent: dict[tuple[int, str], np.ndarray | None] = {}
        for m in messages:
            content = m.content
            if id(content) not in done:
                flat = None
                rec = content.get(wire.ARRAYS)
                if isinstance(rec, ArrayRecord) and len(rec):
                    flat = wire.state_of(rec, self.n)
                    content[wire.ARRAYS] = wire.encode_record(self.codec_down, flat)
                conf = wire.config_of(m)
                conf[wire.LAYOUT] = self.fingerprint
                conf[wire.STATE_SIZE] = self.n
                done[id(content)] = flat
            sent[message_key(m)] = done[id(content)]
        return sent

    # --- uplink ---------------------------------------------------------------------------------
    def _check(self, reply: Message, phase: str, sent: np.ndarray | None, global_eval: bool = False) -> Message:
        """The validated reply (training: arrays decoded to a float32 "state"); ValueError if bad."""
        metrics = wire.metrics_of(reply)
        if phase in (wire.TRAIN, wire.EVALUATE, wire.STATS_PHASE) and metrics.get(wire.LAYOUT) != self.fingerprint:
            raise ValueError(f"layout fingerprint {metrics.get(wire.LAYOUT)} differs from the server's "
                             f"{self.fingerprint} (a client with another model)")
        content = {wire.METRICS: metrics}
        if phase == wire.TRAIN:
            most = getattr(self.class_limits, "per_client", None)  # support images a client of the run holds
            if most is not None and metrics[wire.WEIGHT] > most:
                raise ValueError(f"{wire.WEIGHT} {metrics[wire.WEIGHT]:g} is more than the {most} support images a "
                                 f"client of this run holds (its weight in the aggregate)")
            rec = reply.content.get(wire.ARRAYS)
            if not isinstance(rec, ArrayRecord):
                raise ValueError("training reply carries no 'arrays' record")
            if len(rec):
                x = wire.decode_record(self.codec_up, rec, self.n)
                if self.delta:
                    if sent is None:
                        raise ValueError("an update (delta) for a state that was never sent")
                    x = sent + x
                    if not np.all(np.isfinite(x)):
                        raise ValueError("update overflows the state")
                content[wire.ARRAYS] = wire.state_record(x)
            else:
                content[wire.ARRAYS] = ArrayRecord()
        elif phase == wire.EVALUATE:
            acc = metrics.get("accuracy")
            if not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
                raise ValueError(f"accuracy {acc!r} is not a fraction in [0, 1]")
            if global_eval:
                content[wire.STATS] = self._stats(reply, queries=True)
        elif phase == wire.STATS_PHASE:
            content[wire.STATS] = self._stats(reply, queries=False)
        reply.content = RecordDict(content)
        return reply

    def _stats(self, reply: Message, queries: bool) -> ArrayRecord:
        """The reply's validated "stats" record (``wire.class_stats_of``), as a record of the checked arrays."""
        rec = reply.content.get(wire.STATS)
        if not isinstance(rec, ArrayRecord):
            raise ValueError("reply carries no 'stats' record (class statistics for the global head)")
        return wire.arrays_record(wire.class_stats_of(rec, self.feature_dim, self.scatter, queries, self.class_limits))

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Valid replies only. One exchange may send a node a training and an evaluation message (the next
        round's training with this round's evaluation): replies are matched by (node, message type)."""
        messages = list(messages)
        sent = self._encode(messages)
        phases = {message_key(m): _phase(m) for m in messages}
        global_eval = {message_key(m): bool(wire.config_of(m).get(wire.GLOBAL_EVAL, False))
                       for m in messages if m.has_content() and wire.CONFIG in m.content}
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        valid, answered = [], set()
        for r in replies:
            key = message_key(r, reply=True)
            if key not in phases or key in answered:
                continue  # not asked, or a second reply: ignored
            answered.add(key)
            node, phase = key[0], phases[key]
            if r.has_error():
                kind = "dropout" if r.error.code == wire.INJECTED else "error"
                self._failures.append(Failure(node, phase, kind, r.error.reason or f"error code {r.error.code}"))
                continue
            if self.max_reply_bytes and (size := self._reply_size(r, key)) > self.max_reply_bytes:
                self._failures.append(Failure(node, phase, "rejected", f"a reply of {size:,} bytes, more than "
                                              f"max_reply_mb = {self.max_reply_bytes / 1e6:g} allows"))
                continue
            try:
                valid.append(self._check(r, phase, sent.get(key), global_eval.get(key, False)))
            except (ValueError, KeyError, TypeError) as e:
                self._failures.append(Failure(node, phase, "rejected", str(e)))
        for key, phase in phases.items():
            if key not in answered:
                self._failures.append(Failure(key[0], phase, "timeout", f"no reply within {timeout:g} s"
                                              if timeout is not None else "no reply"))
        return valid


    def _reply_size(self, reply: Message, key: tuple[int, str]) -> int:
        """Wire bytes of ``reply``: as the meter below counted them, else sized here."""
        metered = getattr(self._grid, "reply_wire", None)
        return metered[key] if metered and key in metered else wire.wire_bytes(reply)


def _phase(msg: Message) -> str:
    try:
        return str(wire.config_of(msg).get(wire.PHASE, msg.metadata.message_type))
    except ValueError:
        return msg.metadata.message_type


def for_strategy(reply: Message) -> Message:
    """The reply as a strategy should see it: the decoded state and only the aggregation weight, so
    clients reporting different metric keys never make Flower's consistency check fail."""
    weight = reply.content[wire.METRICS][wire.WEIGHT]
    reply.content = RecordDict({wire.ARRAYS: reply.content[wire.ARRAYS],
                                wire.METRICS: MetricRecord({wire.WEIGHT: weight})})
    return reply

