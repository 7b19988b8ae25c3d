"""``RayPoolGrid``: a Flower Grid whose clients run in a pool of long-lived Ray actors (``engine = "ray"``).

Each actor (``num_cpus`` / ``num_gpus`` per actor, as many as the machine or cluster holds) loads the
ClientApp once and serves many clients one after another, as fast simulators do (pfl-research): the
model and the data set stay warm in the actor, a client's images are copied in only while it works.
Messages travel serialized as Flower's protobuf (what a SuperNode would receive), each with its
node's ``Context`` (node config with ``partition-id``); the handlers are fedfit's unchanged ClientApp.

Why not Flower's simulation engine: in flwr 1.41 and 1.42 an actor whose process died is put back into the
pool and fails every later message it is given, and a client slower than the round's time limit keeps
its actor busy into the next round. Here an actor that dies is replaced and its message answered with
an error; at the exchange's deadline the actors still busy are killed and replaced, their clients
counted as timeouts. A client whose work raised a CUDA error (an illegal access, cuBLAS / cuDNN failures,
out of memory: ``wire.FATAL``, set by ``clients.mods.error_mod``) gets its error reply and its actor is
replaced, since a CUDA context that saw such an error fails every later call in that process. Actors
without a GPU see none (``CUDA_VISIBLE_DEVICES`` is emptied before torch loads), so CPU actors never
open a CUDA context; actors sharing a GPU (``num_gpus`` < 1) cap their CUDA memory at their share.
The pool's size is what fits node by node in Ray's fixed-point units (``pool_size``).
"""
from __future__ import annotations

import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage

from fedfit.wire import FATAL


class _Worker:
    """The Ray actor: one ClientApp, any number of clients in turn."""

    def __init__(self, app_bytes: bytes, env: dict[str, str], gpu_fraction: float = 0.0):
        import ray

        os.environ.update(env)
        if not ray.get_gpu_ids():
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # no GPU given: never touch one (before torch loads)
        elif 0 < gpu_fraction < 1:
            _cap_gpu_memory(gpu_fraction)
        import cloudpickle

        self.app = cloudpickle.loads(app_bytes)

    def run(self, msg: bytes, ctx: bytes) -> tuple[bytes, bytes]:
        message = message_from_proto(ProtoMessage.FromString(msg))
        context = context_from_proto(ProtoContext.FromString(ctx))
        reply = self.app(message, context)
        return message_to_proto(reply).SerializeToString(), context_to_proto(context).SerializeToString()

    def pid(self) -> int:
        return os.getpid()

    def visible_devices(self) -> str | None:
        """This actor's CUDA_VISIBLE_DEVICES ("" when it was given no GPU)."""
        return os.environ.get("CUDA_VISIBLE_DEVICES")


def _cap_gpu_memory(fraction: float) -> None:
    """Cap this process's CUDA allocations at its share of the GPU (``num_gpus`` < 1 shares one GPU among
    actors: one client's large batch then fails in its own actor, not in its neighbours')."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction, 0)


class _Pending:
    """Messages not yet handed to an actor. Those that ``first(msg)`` names go first (the pool: training
    messages, so a round's evaluation sent with the next round's training fills the actors that the
    few, long training clients leave idle); within each group ``take(i)`` gives actor ``i`` the first
    message whose client it served before (``home(msg) == i``: its work and features are cached
    there), else the first message. O(1) per message, so a round of many clients costs no quadratic
    scan."""

    def __init__(self, messages: list[Message], home: Callable[[Message], int | None],
                 first: Callable[[Message], bool] = lambda m: False):
        self._levels = []  # (order, by home) per group, ``first`` ones first
        for group in ([m for m in messages if first(m)], [m for m in messages if not first(m)]):
            by_home: dict[int, deque] = {}
            for m in group:
                h = home(m)
                if h is not None:
                    by_home.setdefault(h, deque()).append(m)
            self._levels.append((deque(group), by_home))
        self._count, self._taken = len(messages), set()  # ids of the messages handed out

    def __len__(self) -> int:
        return self._count - len(self._taken)

    def take(self, i: int) -> Message:
        for order, by_home in self._levels:
            for q in (by_home.get(i), order):
                while q:
                    m = q.popleft()
                    if id(m) not in self._taken:
                        self._taken.add(id(m))
                        return m
        raise IndexError("no message left")


class RayPoolGrid:
    """Nodes 0..partitions-1 served by ``workers`` actors (default: as many as the cluster's CPUs / GPUs
    allow). Node ids are random, as Flower draws them, but all from [2^62, 2^63): every id has the
    same serialized length, so the wire bytes of two runs agree to the byte. ``on_reply()``, when set, is
    called as each message is answered (the live progress of an exchange)."""

    on_reply: Callable[[], None] | None = None

    def __init__(self, client_app, partitions: int, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 workers: int | None = None, env: dict[str, str] | None = None,
                 run_config: dict[str, Any] | None = None, node_seed: int | None = None):
        import cloudpickle
        import ray

        from flwr.supercore.task_identity import TaskIdentity

        if not getattr(TaskIdentity, "_run_id", None):  # what a Flower process sets before messages exist
            TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
        rng = random.Random(node_seed)
        self.nodes = [(1 << 62) + rng.getrandbits(62) for _ in range(partitions)]
        self._partition = {n: p for p, n in enumerate(self.nodes)}
        self._run_config = dict(run_config or {})
        self.contexts: dict[int, Context] = {}  # made when a node gets its first message (1M nodes: cheap)
        self._actor = ray.remote(_Worker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0,
                                                  max_concurrency=1)
        self._app = cloudpickle.dumps(client_app)
        self._env = dict(env or {})
        self._gpu_fraction = float(num_gpus)
        if workers is None:
            workers = pool_size(num_cpus, num_gpus)
        self.size = max(1, int(workers))
        self.workers = [self._spawn() for _ in range(self.size)]
        self.replaced = 0  # actors replaced (died, or killed at a deadline)
        self._home: dict[int, int] = {}  # node id -> index of the actor that served it last
        self._ready = False

    def _spawn(self):
        return self._actor.remote(self._app, self._env, self._gpu_fraction)

    def _replace(self, worker) -> Any:
        import ray

        try:
            ray.kill(worker, no_restart=True)
        except Exception:
            pass
        self.replaced += 1
        return self._spawn()

    def wait_ready(self, timeout: float | None = None) -> list[int]:
        """Block until every actor has started (its process up, the ClientApp loaded) and answered;
        returns their process ids (``fedfit bench``: the pool's start-up time)."""
        import ray

        return [int(p) for p in ray.get([w.pid.remote() for w in self.workers], timeout=timeout)]

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def node_partitions(self) -> dict[int, int]:
        """node id -> partition id, as this engine placed them (no "hello" exchange needed)."""
        return dict(self._partition)

    def _context(self, node: int) -> Context:
        if node not in self.contexts:
            self.contexts[node] = Context(run_id=1, node_id=node, node_config={
                "partition-id": self._partition[node], "num-partitions": len(self.nodes)}, state=RecordDict(),
                run_config=dict(self._run_config))
        return self.contexts[node]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Deliver every message, at most ``size`` at a time; replies received by the deadline (those
        of clients still working then are dropped, their actors replaced). A free actor first takes a
        message of a client it served before (whose work and features it still has cached)."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        queue = [m for m in messages if int(m.metadata.dst_node_id) in self._partition]
        for m in queue:
            m.metadata.__dict__["_message_id"] = str(uuid4())
        if not self._ready:  # the actors' own start (process, imports) is not the clients' time
            self.wait_ready()
            self._ready = True
        pending = _Pending(queue, lambda m: self._home.get(int(m.metadata.dst_node_id)),
                           first=lambda m: m.metadata.message_type == MessageType.TRAIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        free, running, replies = list(range(len(self.workers))), {}, []
        while pending or running:
            while free and pending:
                i = free.pop()
                msg = pending.take(i)
                node = int(msg.metadata.dst_node_id)
                self._home[node] = i
                ref = self.workers[i].run.remote(message_to_proto(msg).SerializeToString(),
                                                 context_to_proto(self._context(node)).SerializeToString())
                running[ref] = (i, msg)
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=wait)
            for ref in ready:
                i, msg = running.pop(ref)
                try:
                    out, ctx = ray.get(ref)
                except RayActorError as e:  # the client's process died: answer for it, start a new actor
                    replies.append(_error(msg, ErrorCode.CLIENT_APP_CRASHED,
                                          f"client process died ({_first_line(e)})"))
                    self.workers[i] = self._replace(self.workers[i])
                except RayTaskError as e:
                    replies.append(_error(msg, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, _first_line(e)))
                else:
                    reply = message_from_proto(ProtoMessage.FromString(out))
                    self.contexts[int(msg.metadata.dst_node_id)] = context_from_proto(ProtoContext.FromString(ctx))
                    replies.append(reply)
                    if reply.has_error() and reply.error.code == FATAL:  # a broken CUDA context: a new process
                        self.workers[i] = self._replace(self.workers[i])
                free.append(i)
                if self.on_reply is not None:
                    self.on_reply()
        for i, _ in running.values():  # past the deadline: these clients time out, their actors go
            self.workers[i] = self._replace(self.workers[i])
        return replies

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:
                pass
        self.workers = []


def pool_size(num_cpus: float, num_gpus: float = 0.0) -> int:
    """Actors that fit at once on the running Ray cluster's live nodes (``ray_cluster.concurrent_clients``,
    node by node, as Flower's engine counts them)."""
    import ray

    from strategies.ray_cluster import concurrent_clients

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n.get("Resources")]
    return concurrent_clients(nodes, num_cpus, num_gpus)


def _error(msg: Message, code: int, reason: str) -> Message:
    reply = Message(Error(code=code, reason=reason[:2000]), reply_to=msg)
    reply.metadata.__dict__["_src_node_id"] = int(msg.metadata.dst_node_id)
    return reply


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
