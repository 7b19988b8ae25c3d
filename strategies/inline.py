"""``InlineGrid``: a Flower Grid that runs a ClientApp in this process, one message after another.

For tests and debugging of the server side without Ray or a SuperLink: every message is copied (as a
transport would: the client cannot touch the server's objects, nor the server the client's), given a
message id, handed to the ClientApp with that node's ``Context`` (node config with ``partition-id``,
state kept across messages as Flower keeps it), and the reply copied back. Node ids are random, as
Flower draws them (``node_seed`` fixes them for a test that needs to), from [2^62, 2^63): every id
has the same serialized length, so wire bytes do not depend on the draw.
"""
from __future__ import annotations

import random
import time
from collections.abc import Iterable
from typing import Any, Callable
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto


class InlineGrid:
    """``num_nodes`` virtual nodes; node i holds ``partition-id`` i (unless ``node_configs`` say else).

    ``hook(partition_id, message) -> Message | None`` may replace a node's reply (tests of hostile
    or broken clients); ``delay(partition_id, message) -> seconds`` simulates slow clients against
    the ``timeout`` of ``send_and_receive`` (a late reply is dropped, as Flower drops it); ``on_reply()``,
    when set, is called as each message is answered (the live progress of an exchange)."""

    on_reply: Callable[[], None] | None = None

    def __init__(self, client_app, num_nodes: int, node_configs: list[dict[str, Any]] | None = None,
                 run_config: dict[str, Any] | None = None, node_seed: int | None = None,
                 hook: Callable[[int, Message], Message | None] | None = None,
                 delay: Callable[[int, Message], float] | None = None):
        from flwr.supercore.task_identity import TaskIdentity

        if not getattr(TaskIdentity, "_run_id", None):  # what a Flower process sets before messages exist
            TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
        rng = random.Random(node_seed)
        self.app, self.hook, self.delay = client_app, hook, delay
        configs = node_configs or [{"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)]
        self.nodes = [(1 << 62) + rng.getrandbits(62) for _ in configs]
        self.contexts = {n: Context(run_id=1, node_id=n, node_config=dict(c), state=RecordDict(),
                                    run_config=dict(run_config or {})) for n, c in zip(self.nodes, configs)}
        self.delivered = 0

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def node_partitions(self) -> dict[int, int]:
        """node id -> partition id, as this engine placed them (no "hello" exchange needed)."""
        return {n: int(c.node_config.get("partition-id", -1)) for n, c in self.contexts.items()}

    def _deliver(self, msg: Message) -> Message | None:
        node = int(msg.metadata.dst_node_id)
        if node not in self.contexts:
            return None
        msg = _copy(msg)
        msg.metadata.__dict__["_message_id"] = str(uuid4())
        msg.metadata.__dict__["_src_node_id"] = 0
        ctx = self.contexts[node]
        pid = int(ctx.node_config.get("partition-id", -1))
        reply = self.hook(pid, msg) if self.hook else None
        if reply is None:
            reply = self.app(msg, ctx)
        self.delivered += 1
        return _copy(reply)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        start = time.monotonic()
        replies = []
        for msg in messages:
            late = self.delay(int(self.contexts[int(msg.metadata.dst_node_id)].node_config.get("partition-id", -1)),
                              msg) if self.delay and int(msg.metadata.dst_node_id) in self.contexts else 0.0
            reply = self._deliver(msg)
            if reply is not None and (timeout is None or time.monotonic() - start + late <= timeout):
                replies.append(reply)
            if self.on_reply is not None:
                self.on_reply()
        return replies


def _copy(msg: Message) -> Message:
    """A copy sharing nothing with ``msg``, through Flower's own serialization."""
    return message_from_proto(message_to_proto(msg))
