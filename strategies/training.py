"""One round's training on the clients, for any method (``fedfit.methods``): the sampled partitions (only
clients online on the simulated clock), their messages (the global state, or none when the method keeps
no shared state), the simulated clock's view of the replies (which are kept), and what the method does
with the kept replies (``Method.aggregate``, the stock strategy through ``strategies.aggregation``).

With ``overlap_eval`` (``overlaps``) round r + 1's training messages are planned before round r's
evaluation and go out in the same exchange (``plan_ahead``; ``strategies.exchange.Ahead``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message

from fedfit import wire
from fedfit.clock import Clock
from fedfit.methods import Method, Reply
from strategies.aggregation import Aggregator
from strategies.codec_layer import Failure, for_strategy
from strategies.exchange import Ahead, Exchanges
from strategies.global_state import GlobalState
from strategies.metering import Meter, MeteredGrid
from strategies.round_log import RoundLog, personal_state
from strategies.sampling import ClientSampler, GridView

TRAINING_METRICS = ("train_loss", "train_steps", "train_seconds", "update_norm")  # kept per client


def overlaps(cfg: dict[str, Any]) -> bool:
    """Whether a round's evaluation goes out with the next round's training (``overlap_eval``): not for a
    method that says no (``Method.overlap``: the bounds), nor for adapters with personal state (ICIIA's
    history), which a client's evaluation writes and its next training reads."""
    from fedfit.registry import METHODS

    return bool(cfg["overlap_eval"]) and METHODS.get(cfg["method"]).overlap and not personal_state(cfg)


class Training:
    """The training exchanges of a run over ``metered`` (the meter's grid: a strategy's view) and
    ``exchanges`` (the codec layer's)."""

    def __init__(self, cfg: dict[str, Any], method: Method, exchanges: Exchanges, metered: MeteredGrid,
                 meter: Meter, sampler: ClientSampler, clock: Clock | None, aggregator: Aggregator,
                 model: GlobalState):
        self.cfg, self.method, self.exchanges, self.metered, self.meter = cfg, method, exchanges, metered, meter
        self.directory = exchanges.directory
        self.sampler, self.clock, self.aggregator, self.model = sampler, clock, aggregator, model
        self.overlap = overlaps(cfg)

    def run(self, server_round: int, rnd: RoundLog) -> tuple[int, float | None]:
        """One training exchange + what the method does with it; returns (clients kept, mean training loss)."""
        planned = self.messages(server_round, rnd)
        if planned is None:
            return 0, None
        messages, k = planned
        replies, failures = self.exchanges.send(messages)
        return self.finish(server_round, rnd, replies, failures, k)

    def messages(self, server_round: int, rnd: RoundLog) -> tuple[list[Message], int] | None:
        """The round's training messages (sorted by partition) and how many replies it keeps; None when
        it trains nobody (why is in ``rnd.failures``)."""
        cfg = self.cfg
        k = self.method.cohort()
        pool = None
        if self.clock is not None:  # only clients online at the round's start can be sampled
            everyone = list(range(cfg["num_clients"]))
            pool = self.clock.online(everyone)
            if not pool and self.clock.wait_for_online(everyone):  # nobody online now: wait for the first
                pool = self.clock.online(everyone)
            if not pool:
                rnd.skipped("no training client is ever online again")
                rnd.clock = {"sim_seconds": 0.0, "online": 0}
                return None
            rnd.clock["online"] = len(pool)
        partitions = self.sampler.train(server_round, k + cfg["over_select"], pool)
        rnd.trained = partitions
        nodes = self.exchanges.nodes(partitions, rnd, wire.TRAIN)
        if not nodes:
            return None
        view = GridView(self.metered, sorted(nodes.values()))
        arrays = self.model.arrays if self.method.shared else ArrayRecord()  # else: clients start from their own
        config = ConfigRecord({wire.PHASE: wire.TRAIN, wire.ROUND: server_round})
        try:
            messages = list(self.aggregator.strategy.configure_train(server_round, arrays, config, view))
        except ValueError as e:  # DP accounting refuses a round with fewer clients than configured
            rnd.skipped(str(e))
            return None
        by_node = self.directory.by_node
        messages.sort(key=lambda m: by_node[int(m.metadata.dst_node_id)])
        return messages, k

    def plan_ahead(self, server_round: int) -> Ahead | None:
        """Round ``server_round``'s training messages, to go out with the previous round's evaluation; None
        where they may not (``overlaps``), and the round trains after it."""
        if not self.overlap:
            return None
        self.meter.round = server_round  # a refresh's hello messages belong to that round
        self.directory.refresh(self.metered, timeout=self.cfg["timeout_s"])
        rnd = RoundLog(self.directory)
        before = self.clock.now if self.clock is not None else None
        planned = self.messages(server_round, rnd)
        ahead = Ahead(rnd, *(planned or ([], 0)), clock_now=None)
        if self.clock is not None:  # the sampling may have waited for a client: that round's time
            ahead.clock_now, self.clock.now = self.clock.now, before
        self.meter.round = server_round - 1
        return ahead

    def finish(self, server_round: int, rnd: RoundLog, replies: list[Message], failures: list[Failure],
               k: int) -> tuple[int, float | None]:
        """The training replies (validated) through the clock and the method into the new global state;
        returns (clients kept, mean training loss)."""
        rnd.fail(failures)
        self.exchanges.give_up_if_nothing_works(wire.TRAIN, len(replies), failures)
        self.exchanges.sort(replies)
        if self.clock is not None:
            replies = self._settle(server_round, replies, k, rnd)
        losses, kept = [], []
        by_node = self.directory.by_node
        for r in replies:
            m = dict(r.content[wire.METRICS])
            c = rnd.trainer(int(r.metadata.src_node_id))
            c.update({key: m[key] for key in TRAINING_METRICS if key in m})
            if isinstance(m.get("train_loss"), float):
                losses.append(m["train_loss"])
            kept.append(Reply(by_node[int(r.metadata.src_node_id)], m, _state_of(r)))
        if replies:
            messages = {c.partition: r for c, r in zip(kept, replies)}

            def stock(chosen) -> np.ndarray | None:
                return self.aggregator.aggregate(server_round, [for_strategy(messages[c.partition]) for c in chosen],
                                                 rnd)

            new = self.method.aggregate(server_round, self.model.flat, kept, stock)
            if new is not None:
                self.model.set(new)
        return len(replies), (float(np.mean(losses)) if losses else None)

    def _settle(self, server_round: int, replies: list[Message], k: int, rnd: RoundLog) -> list[Message]:
        """The simulated clock's view of the exchange: each reply's finish time from its metered bytes and
        trained images; the replies the round keeps (the first ``k`` in time, within the deadline), the
        stragglers and the clients that went offline counted as failures (injected: the run goes on)."""
        by_node = self.directory.by_node
        down: dict[int, int] = {}
        up: dict[int, int] = {}
        for t in self.meter.peek():
            if t.kind == wire.TRAIN and t.round == server_round:
                side = down if t.direction == "down" else up
                side[t.node_id] = side.get(t.node_id, 0) + t.wire
        work = {}
        for r in replies:
            node = int(r.metadata.src_node_id)
            images = dict(r.content[wire.METRICS]).get("train_images", 0)
            work[by_node[node]] = (down.get(node, 0), up.get(node, 0), int(images) if isinstance(images, int) else 0)
        s = self.clock.settle(work, k)
        for p, sec in s.finish.items():
            rnd.training.setdefault(p, {})["sim_s"] = round(sec, 6)
        for p in s.late:
            rnd.failures.append({"client": p, "phase": wire.TRAIN, "kind": "straggler",
                                 "reason": f"reply at {s.finish[p]:.1f} simulated s, after the round ended at "
                                           f"{s.seconds:.1f} s"})
        for p in s.offline:
            rnd.failures.append({"client": p, "phase": wire.TRAIN, "kind": "offline",
                                 "reason": f"went offline before its reply ({s.finish[p]:.1f} simulated s)"})
        rnd.clock.update(sim_seconds=s.seconds, stragglers=len(s.late), offline=len(s.offline),
                         offline_nodes={self.directory.by_partition[p] for p in s.offline})
        keep = set(s.kept)
        return [r for r in replies if by_node[int(r.metadata.src_node_id)] in keep]


def _state_of(reply: Message):
    """A loader of the float32 state a validated training reply carries (None: it carries none)."""
    def load() -> np.ndarray | None:
        rec = reply.content[wire.ARRAYS]
        return wire.state_of(rec) if len(rec) else None
    return load
