"""Which Flower node holds which partition: a "hello" exchange with every node.

Flower draws node ids at random at every start (simulation and deployment), so node ids never serve
as identities. Before round 0 the server asks each connected node for its ``partition-id``
(``NodeDirectory.discover``, bounded by ``timeout_s``); nodes that connect later are asked when they
appear (``refresh``). Two nodes claiming one partition, or a partition outside 0..num_clients-1, are
refused and reported. fedfit's own engines (``strategies.pool``, ``strategies.inline``) assign the
partitions themselves and say so (``node_partitions()``): no message is needed then.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from fedfit import wire


SETTLE_S = 10.0  # discovery ends when no new node has connected for this many seconds


def hello_messages(nodes: list[int]) -> list[Message]:
    """A "hello" query to each of ``nodes``: its reply names the partition the node holds."""
    return [Message(RecordDict({wire.CONFIG: ConfigRecord({wire.PHASE: wire.HELLO})}), dst_node_id=int(n),
                    message_type=MessageType.QUERY) for n in nodes]


@dataclass
class NodeDirectory:
    """partition id <-> node id of the nodes that answered; ``refused``: (node, reason)."""

    num_clients: int
    by_partition: dict[int, int] = field(default_factory=dict)
    by_node: dict[int, int] = field(default_factory=dict)
    refused: list[tuple[int, str]] = field(default_factory=list)
    _asked: set[int] = field(default_factory=set)

    def discover(self, grid, timeout: float, expect: int | None = None, poll: float = 0.5,
                 settle: float | None = None) -> None:
        """Ask every connected node; keep asking new ones until ``expect`` (default: num_clients)
        partitions are known, or no new node has connected for ``settle`` seconds after at least one
        answered, or ``timeout`` seconds have passed. Partitions still without a node are then counted
        absent each round (a node that connects later is asked at the next round's ``refresh``), so a
        federation with fewer nodes than partitions starts instead of waiting out ``timeout_s``."""
        expect = self.num_clients if expect is None else expect
        settle = SETTLE_S if settle is None else settle
        start = time.monotonic()
        deadline, last_new, seen = start + timeout, start, -1
        while True:
            self.refresh(grid, timeout=max(1.0, deadline - time.monotonic()))
            now = time.monotonic()
            if len(self._asked) != seen:
                seen, last_new = len(self._asked), now
            if len(self.by_partition) >= expect or now >= deadline:
                return
            if self.by_partition and now - last_new >= settle:
                return
            time.sleep(poll)

    def missing(self) -> list[int]:
        """Partitions (0..num_clients-1) that no node holds."""
        return [p for p in range(self.num_clients) if p not in self.by_partition]

    def refresh(self, grid, timeout: float) -> None:
        """Ask the nodes not asked before which partition they hold."""
        new = [int(n) for n in grid.get_node_ids() if int(n) not in self._asked]
        if not new:
            return
        self._asked.update(new)
        assigned = getattr(grid, "node_partitions", None)
        if callable(assigned):  # an engine that placed the partitions itself: nothing to ask
            known = assigned()
            for node in new:
                if node in known:
                    self._add(node, int(known[node]))
            return
        for r in grid.send_and_receive(hello_messages(new), timeout=timeout):
            node = int(r.metadata.src_node_id)
            if r.has_error():
                self.refused.append((node, f"hello failed: {r.error.reason}"))
                continue
            try:
                pid = int(wire.metrics_of(r)[wire.PARTITION])
            except (ValueError, KeyError, TypeError) as e:
                self.refused.append((node, f"bad hello reply: {e}"))
                continue
            self._add(node, pid)

    def _add(self, node: int, pid: int) -> None:
        if not 0 <= pid < self.num_clients:
            self.refused.append((node, f"partition-id {pid} outside 0..{self.num_clients - 1}"))
        elif pid in self.by_partition:
            self.refused.append((node, f"partition-id {pid} is already held by another node"))
        else:
            self.by_partition[pid] = node
            self.by_node[node] = pid

    def nodes(self, partitions: list[int]) -> tuple[dict[int, int], list[int]]:
        """({partition: node} of those connected, [partitions without a node])."""
        have = {p: self.by_partition[p] for p in partitions if p in self.by_partition}
        return have, [p for p in partitions if p not in have]
