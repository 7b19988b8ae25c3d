"""The server's exchanges with its clients, addressed by partition id: which nodes hold the partitions
(the others are counted absent), one send-and-receive of validated replies (with the next round's
training messages when they go out together: ``Ahead``), and the stop when no client can work at all or
more of a round's clients fail than the operator allows (``max_failures``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message, MessageType

from fedfit import wire
from strategies.codec_layer import CodecGrid, Failure
from strategies.nodes import NodeDirectory
from strategies.round_log import COUNTED, RoundLog


class FederationError(RuntimeError):
    """The federation cannot go on (no node answered, no client could train or evaluate)."""


@dataclass
class Ahead:
    """The next round's training, sent in the same exchange as this round's evaluation (``overlap_eval``):
    both start from this round's state, so the actors that a round's few training clients leave idle
    evaluate meanwhile. ``rnd``: the next round's collector; ``messages``: its training messages (empty
    when it trains nobody); ``k``: replies it keeps; ``clock_now``: the simulated clock after its
    sampling (put back until that round starts); ``replies`` / ``failures``: filled by the exchange."""

    rnd: RoundLog
    messages: list[Message]
    k: int
    clock_now: float | None
    replies: list[Message] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


class Exchanges:
    """Exchanges over ``grid`` (the codec layer: valid, decoded replies; the rest as failures). Its state
    (checkpointed): which phases ever had a client succeed (``ever``)."""

    def __init__(self, grid: CodecGrid, directory: NodeDirectory, timeout: float, max_failures: float = 1.0):
        self.grid, self.directory, self.timeout, self.max_failures = grid, directory, timeout, max_failures
        self.ever = {wire.TRAIN: False, wire.EVALUATE: False}

    def nodes(self, partitions: list[int], rnd: RoundLog, phase: str) -> dict[int, int]:
        """partition -> node of those ``partitions`` a node holds; the others recorded absent in ``rnd``."""
        have, missing = self.directory.nodes(partitions)
        rnd.absent(missing, phase)
        return have

    def give_up_if_nothing_works(self, phase: str, ok: int, failures: list[Failure]) -> None:
        """Stop the run when every client of the first exchanges of ``phase`` failed with an error, or when
        the share of this exchange's clients whose messages failed (errors, timeouts, absent nodes, rejected
        replies; not simulated faults) is above ``max_failures``."""
        errors = [f for f in failures if f.kind in ("error", "rejected")]
        if ok == 0 and errors and not self.ever[phase]:
            raise FederationError(f"no client could {phase}: {errors[0].reason} "
                                  f"({len(failures)} of {len(failures) + ok} clients failed)")
        counted = [f for f in failures if f.kind in COUNTED]
        total = ok + len(failures)
        if self.max_failures < 1 and total and len(counted) / total > self.max_failures:
            raise FederationError(f"{len(counted)} of {total} clients failed to {phase} in one exchange, more than "
                                  f"max_failures = {self.max_failures:g} allows (first: {counted[0].reason})")
        self.ever[phase] = self.ever[phase] or ok > 0

    def send(self, messages: list[Message], ahead: Ahead | None = None) -> tuple[list[Message], list[Failure]]:
        """Send ``messages`` and, in the same exchange, ``ahead``'s training messages (first); returns the
        replies and failures of ``messages``; ``ahead`` keeps its own for its round."""
        train = ahead.messages if ahead is not None else []
        if not (train or messages):
            return [], []
        replies = self.grid.send_and_receive(train + messages, timeout=self.timeout)
        failures = self.grid.take_failures()
        if ahead is not None:
            ahead.replies = [r for r in replies if r.metadata.message_type == MessageType.TRAIN]
            ahead.failures = [f for f in failures if f.phase == wire.TRAIN]
            replies = [r for r in replies if r.metadata.message_type != MessageType.TRAIN]
            failures = [f for f in failures if f.phase != wire.TRAIN]
        return replies, failures

    def sort(self, replies: list[Message]) -> list[Message]:
        """``replies`` in place, by their senders' partition ids."""
        by_node = self.directory.by_node
        replies.sort(key=lambda r: by_node[int(r.metadata.src_node_id)])
        return replies

    def state(self) -> dict[str, Any]:
        return {"ever": dict(self.ever)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.ever = dict(state["ever"])
