"""The server's round loop: sample, train, aggregate, evaluate, meter, write one line per round.

The Grid is wrapped, innermost first, by the meter (bytes as serialized), the codec layer (encode
the downlink once per round, validate and decode every reply) and, per round, a view that shows the
strategy only the sampled clients' nodes. The strategy is a stock Flower one and sees float32 states.

Round 0 evaluates the initial state (the frozen backbone's head). Round r >= 1: ``ClientSampler``
picks the training partitions from the run's seed (under DP's secret sampling, ``dp_randomness = secret``,
from the operating system's entropy, and ``_Round.written`` keeps every trace of who trained out of the
results; see ``strategies.dp``); the strategy configures their messages; replies
are validated and decoded, sorted by partition id and aggregated. Then a seeded sample of clients
(``eval_clients``, 0 = all) evaluates the new global state on its own query sets (personalized
accuracy). With ``global_eval`` the evaluated training clients also send their support sets' class
statistics and their query features, and every other training client its class statistics (a
"stats" exchange): the server builds ONE head of the configured family over every class any training
client holds (``fedfit.global_head``; robustly for robust strategies) and scores the evaluated
clients' query images with it (global accuracy, FiT's second number).

With ``overlap_eval`` (the default) an evaluated round's evaluation messages go out in ONE exchange
with the next round's training messages: both start from the same state, so the actors that a
round's few training clients leave idle evaluate meanwhile. The replies are split by type: the
evaluation's make this round's record, the training's are kept for the next round, whose record
gets them (and their bytes: the meter counts each message in its own round). The results are those
of the sequential order (a test pins it); only the rounds' wall times move (round 0 then holds
round 1's training, the last round only its evaluation).

The bounds run through the same loop: ``local-only`` trains every training client once, alone, in
round 1 (nothing aggregated; its control messages carry no state and are not counted as traffic),
``centralized`` trains on the server over the pooled support sets (``fedfit.centralized``; its
round-1 traffic is the support images' upload).

Failed client messages (errors, timeouts, absent nodes, rejected replies) are recorded with their
reasons and the round goes on with the rest; a run in which no client can train (or evaluate) at
all stops with ``FederationError`` naming the first client error.

After every round's results line the server writes its checkpoint (``strategies.checkpoint``);
``resume=True`` continues after the last complete round and ends exactly as an uninterrupted run (under
DP's secret sampling it continues with fresh samples and noise: not bit-exact, but the accountant's state
carries on).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedfit import wire
from fedfit import faults, seeding
from fedfit.centralized import pooled_personal
from fedfit.clock import Clock, profile_table
from fedfit.centralized import fit_oracle
from fedfit.config import eval_clients, run_name, training_rounds
from fedfit.global_head import ClassLimits, GlobalStatistics, needs_scatter
from fedfit.format import human_bytes
from fedfit.paired import encode_answers
from fedfit.preflight import RunSetup, prepare
from fedfit.results import RoundRecord, check_run_dir
from strategies import ROBUST, checkpoint, create_strategy, dp
from strategies.callbacks import (Callback, PrintProgress, ReportPersonalState, SaveCheckpoint, Track,
                                  WriteResults, summary_record)
from strategies.codec_layer import CodecGrid, Failure, for_strategy
from strategies.metering import Meter, MeteredGrid, Transfer, total
from strategies.nodes import NodeDirectory
from strategies.sampling import ClientSampler, GridView


class FederationError(RuntimeError):
    """The federation cannot go on (no node answered, no client could train or evaluate)."""


class _Round:
    """What one round collects before it becomes a ``RoundRecord``: evaluation numbers per client
    (``per_client``) apart from training ones (``training``: metrics, simulated finish, bytes), which
    ``written`` leaves out under DP's secret sampling."""

    def __init__(self, directory: NodeDirectory):
        self.directory = directory
        self.failures: list[dict[str, Any]] = []
        self.per_client: dict[int, dict[str, Any]] = {}
        self.training: dict[int, dict[str, Any]] = {}
        self.central: dict[str, Any] = {}  # centralized: the server's own training numbers
        self.trained: list[int] = []
        self.clock: dict[str, Any] = {}  # sim_seconds, online, stragglers, offline (fedfit.clock)

    def client(self, node: int) -> dict[str, Any]:
        return self.per_client.setdefault(self.directory.by_node.get(node, -1), {})

    def trainer(self, node: int) -> dict[str, Any]:
        return self.training.setdefault(self.directory.by_node.get(node, -1), {})

    def written(self, secret: bool, personal: bool) -> dict[str, Any]:
        """The record's ``trained``, ``per_client`` and ``failures``. ``secret`` (``fedfit.seeding.secret``):
        nothing that tells who trained - no sampled ids, no training numbers per client, training failures
        without client and reason (a straggler's reason holds its device's simulated time), no evaluation
        seconds per client (an actor's warm cache) and, with an adapter whose personal state training writes
        (``personal``), no evaluation numbers per client either."""
        if not secret:
            merged = {p: {**self.training.get(p, {}), **self.per_client.get(p, {})}
                      for p in sorted(set(self.training) | set(self.per_client))}
            return {"trained": self.trained, "per_client": {str(p): v for p, v in merged.items()},
                    "failures": self.failures}
        evaluated = {} if personal else {str(p): {k: v for k, v in c.items() if k != "eval_seconds"}
                                         for p, c in sorted(self.per_client.items())}
        failures = [f if f["phase"] != wire.TRAIN or f["client"] == -1 else
                    {**f, "client": -1, "reason": "withheld: it could tell who trained (dp_randomness = secret)"}
                    for f in self.failures]
        return {"trained": [], "per_client": evaluated, "failures": failures}

    def fail(self, failures: list[Failure]) -> None:
        for f in failures:
            self.failures.append({"client": self.directory.by_node.get(f.node, -1), "phase": f.phase,
                                  "kind": f.kind, "reason": f.reason})

    def absent(self, partitions: list[int], phase: str) -> None:
        self.failures += [{"client": p, "phase": phase, "kind": "absent", "reason": "no node holds this partition"}
                          for p in partitions]


@dataclass
class _Ahead:
    """The next round's training, sent in the same exchange as this round's evaluation (``overlap_eval``):
    both start from this round's state, so the actors that a round's few training clients leave idle
    evaluate meanwhile. ``rnd``: the next round's collector; ``messages``: its training messages (empty
    when it trains nobody); ``k``: replies it keeps; ``clock_now``: the simulated clock after its
    sampling (put back until that round starts); ``replies`` / ``failures``: filled by the exchange."""

    rnd: _Round
    messages: list[Message]
    k: int
    clock_now: float | None
    replies: list[Message] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


class Federation:
    """One run's server side over ``grid``; ``run()`` returns the summary."""

    def __init__(self, grid, cfg: dict[str, Any], setup: RunSetup | None = None,
                 progress: Callable[[str], None] = print, resume: bool = False, overwrite: bool = False,
                 callbacks: Sequence[Callback] = ()):
        self.cfg, self.progress, self.resume, self.overwrite = cfg, progress, resume, overwrite
        self.run_dir = Path(cfg["out_dir"]) / run_name(cfg)
        check_run_dir(self.run_dir, resume, overwrite)
        self.setup = setup or prepare({**cfg, "device": "cpu"})  # the server holds no GPU for the run
        self.layout = self.setup.layout
        self.strategy = create_strategy(cfg)
        # the simulated clock (fedfit.clock); the centralized bound trains on the server: no devices
        self.clock = None if cfg["method"] == "centralized" else Clock(cfg, self.setup.partitions)
        self.results = WriteResults(self._config_record(), overwrite=overwrite)
        self.personal = ReportPersonalState(progress)
        self.tracker_id: str | None = None  # the experiment tracker's run id (kept in the checkpoint)
        own: list[Callback] = [self.results, SaveCheckpoint(), PrintProgress(progress, training_rounds(cfg)),
                               self.personal]
        if cfg["tracker"] != "none":
            own.append(Track(cfg["tracker"]))
        self.callbacks: list[Callback] = [*own, *callbacks]
        for cb in self.callbacks:
            grid = cb.wrap_grid(grid)
        self.meter = Meter()
        self.metered = MeteredGrid(grid, self.meter)
        self.scatter = needs_scatter(self.setup.head)
        self.grid = CodecGrid(self.metered, cfg["codec_down"], cfg["codec_up"], cfg["delta"],
                              self.layout.fingerprint, self.layout.size, feature_dim=self.setup.feature_dim,
                              scatter=self.scatter, class_limits=ClassLimits.of(cfg))
        self.directory = NodeDirectory(self.setup.partitions)
        self.secret = seeding.secret(cfg)  # DP's secret sampling: nothing written tells who trained
        self.personal_state = _personal_state(cfg)
        self.sampler = ClientSampler(cfg["seed"], cfg["num_clients"], secret=self.secret)
        self.local_only = cfg["method"] == "local-only"
        self.centralized = cfg["method"] == "centralized"
        self._central = None  # fedfit.centralized.CentralTrainer, made when first needed
        self.arrays = wire.state_record(self.setup.initial)
        self.overlap = overlaps(cfg)
        self.ledger = dp.Ledger(cfg)  # private releases -> both epsilons
        self.ever = {wire.TRAIN: False, wire.EVALUATE: False}

    # --- exchanges ------------------------------------------------------------------------------
    def _nodes(self, partitions: list[int], rnd: _Round, phase: str) -> dict[int, int]:
        have, missing = self.directory.nodes(partitions)
        rnd.absent(missing, phase)
        return have

    def _give_up_if_nothing_works(self, phase: str, ok: int, failures: list[Failure]) -> None:
        """Stop the run when every client of the first exchanges of ``phase`` failed with an error."""
        errors = [f for f in failures if f.kind in ("error", "rejected")]
        if ok == 0 and errors and not self.ever[phase]:
            raise FederationError(f"no client could {phase}: {errors[0].reason} "
                                  f"({len(failures)} of {len(failures) + ok} clients failed)")
        self.ever[phase] = self.ever[phase] or ok > 0

    def train_central(self, server_round: int, rnd: _Round) -> tuple[int, float | None, int]:
        """``centralized``: the server's steps over the pooled support sets; returns (clients whose data
        was pooled, mean loss, upload bytes: the pooled images in the first round, else 0)."""
        from fedfit.centralized import CentralTrainer

        if self._central is None:
            self._central = CentralTrainer(self.cfg)
        new, m = self._central.train(wire.state_of(self.arrays), server_round)
        self.arrays = wire.state_record(new)
        rnd.central = {k: m[k] for k in ("train_loss", "train_steps", "train_seconds", "update_norm",
                                          "pooled_images") if k in m}
        upload = self._central.upload_bytes() if server_round == 1 else 0
        return self.cfg["num_clients"], m.get("train_loss"), upload

    def train(self, server_round: int, rnd: _Round) -> tuple[int, float | None]:
        """One training exchange + aggregation; returns (clients used, mean training loss)."""
        planned = self._train_messages(server_round, rnd)
        if planned is None:
            return 0, None
        messages, k = planned
        replies = self.grid.send_and_receive(messages, timeout=self.cfg["timeout_s"])
        return self._aggregate(server_round, rnd, replies, self.grid.take_failures(), k)

    def _train_messages(self, server_round: int, rnd: _Round) -> tuple[list[Message], int] | None:
        """The round's training messages (sorted by partition) and how many replies it keeps; None when
        it trains nobody (why is in ``rnd.failures``)."""
        cfg = self.cfg
        k = cfg["num_clients"] if self.local_only else cfg["clients_per_round"]  # local-only: everyone, once
        pool = None
        if self.clock is not None:  # only clients online at the round's start can be sampled
            everyone = list(range(cfg["num_clients"]))
            pool = self.clock.online(everyone)
            if not pool and self.clock.wait_for_online(everyone):  # nobody online now: wait for the first
                pool = self.clock.online(everyone)
            if not pool:
                rnd.failures.append({"client": -1, "phase": wire.TRAIN, "kind": "skipped",
                                     "reason": "no training client is ever online again"})
                rnd.clock = {"sim_seconds": 0.0, "online": 0}
                return None
            rnd.clock["online"] = len(pool)
        partitions = self.sampler.train(server_round, k + cfg["over_select"], pool)
        rnd.trained = partitions
        nodes = self._nodes(partitions, rnd, wire.TRAIN)
        if not nodes:
            return None
        view = GridView(self.metered, sorted(nodes.values()))
        arrays = ArrayRecord() if self.local_only else self.arrays
        config = ConfigRecord({wire.PHASE: wire.TRAIN, wire.ROUND: server_round})
        try:
            messages = list(self.strategy.configure_train(server_round, arrays, config, view))
        except ValueError as e:  # DP accounting refuses a round with fewer clients than configured
            rnd.failures.append({"client": -1, "phase": wire.TRAIN, "kind": "skipped", "reason": str(e)})
            return None
        by_node = self.directory.by_node
        messages.sort(key=lambda m: by_node[int(m.metadata.dst_node_id)])
        return messages, k

    def _aggregate(self, server_round: int, rnd: _Round, replies: list[Message], failures: list[Failure],
                   k: int) -> tuple[int, float | None]:
        """The training replies (validated) into the new global state; returns (clients used, mean loss)."""
        cfg = self.cfg
        rnd.fail(failures)
        self._give_up_if_nothing_works(wire.TRAIN, len(replies), failures)
        by_node = self.directory.by_node
        replies.sort(key=lambda r: by_node[int(r.metadata.src_node_id)])
        if self.clock is not None:
            replies = self._settle(server_round, replies, k, rnd)
        losses = []
        for r in replies:
            m = dict(r.content[wire.METRICS])
            c = rnd.trainer(int(r.metadata.src_node_id))
            c.update({k: m[k] for k in ("train_loss", "train_steps", "train_seconds", "update_norm") if k in m})
            if isinstance(m.get("train_loss"), float):
                losses.append(m["train_loss"])
        if replies and not self.local_only:
            # Flower's DP wrappers draw their noise from numpy's global generator: seed it from the run's
            # tree for this round (and put it back), so DP runs are reproducible and resumable too - or,
            # under secret sampling, from the OS's entropy (noise that follows from the seed hides nothing)
            saved = np.random.get_state()
            np.random.seed(None if self.secret else seeding.derive(cfg["seed"], "aggregate", server_round))
            try:
                new, _ = self.strategy.aggregate_train(server_round, [for_strategy(r) for r in replies])
            finally:
                np.random.set_state(saved)
            if cfg["dp"] != "none":
                self.ledger.after_aggregate(self.strategy, new is not None)
            if new is not None:
                try:
                    self.arrays = wire.state_record(wire.aggregated_state(new, self.layout.size))
                except ValueError as e:
                    rnd.failures.append({"client": -1, "phase": wire.TRAIN, "kind": "aggregate", "reason": str(e)})
        return len(replies), (float(np.mean(losses)) if losses else None)

    def _plan_ahead(self, server_round: int) -> _Ahead | None:
        """Round ``server_round``'s training messages, to go out with the previous round's evaluation; None
        where they may not (``overlap_eval = false``; the bounds; adapters with personal state, which a
        client's evaluation writes and its next training reads), and the round trains after it."""
        if not self.overlap:
            return None
        self.meter.round = server_round  # a refresh's hello messages belong to that round
        self.directory.refresh(self.metered, timeout=self.cfg["timeout_s"])
        rnd = _Round(self.directory)
        before = self.clock.now if self.clock is not None else None
        planned = self._train_messages(server_round, rnd)
        ahead = _Ahead(rnd, *(planned or ([], 0)), clock_now=None)
        if self.clock is not None:  # the sampling may have waited for a client: that round's time
            ahead.clock_now, self.clock.now = self.clock.now, before
        self.meter.round = server_round - 1
        return ahead

    def _settle(self, server_round: int, replies: list[Message], k: int, rnd: _Round) -> list[Message]:
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

    def evaluate(self, server_round: int, rnd: _Round, ahead: _Ahead | None = None) -> dict[str, Any]:
        """Training clients (a seeded sample, ``eval_clients``) and every new user evaluate the global state.
        ``ahead``: the next round's training messages, sent in the same exchange (both start from this
        round's state); their replies and failures are kept in it for that round."""
        cfg = self.cfg
        n = cfg["num_clients"]
        partitions = self.sampler.evaluate(server_round, eval_clients(cfg)) + list(range(n, self.setup.partitions))
        nodes = self._nodes(partitions, rnd, wire.EVALUATE)
        if not nodes:
            self._exchange([], ahead)
            return {"eval_clients": 0}
        global_eval = bool(cfg["global_eval"] and not self.local_only)

        def content(global_stats: bool, phase: str = wire.EVALUATE) -> RecordDict:
            return RecordDict({wire.ARRAYS: ArrayRecord() if self.local_only else self.arrays,
                               wire.CONFIG: ConfigRecord({wire.PHASE: phase, wire.ROUND: server_round,
                                                          wire.GLOBAL_EVAL: global_stats})})

        trained, held_out = content(global_eval), content(False)
        messages = [Message(trained if p < n else held_out, dst_node_id=node, message_type=MessageType.EVALUATE)
                    for p, node in sorted(nodes.items())]
        replies, failures = self._exchange(messages, ahead)
        rnd.fail(failures)
        self._give_up_if_nothing_works(wire.EVALUATE, len(replies), failures)
        by_node = self.directory.by_node
        replies.sort(key=lambda r: by_node[int(r.metadata.src_node_id)])
        accs, new, tuned, stats, norms = [], [], [], [], []
        extra: dict[str, list[float]] = {}
        new_extra: dict[str, list[float]] = {}
        for r in replies:
            m = dict(r.content[wire.METRICS])
            node = int(r.metadata.src_node_id)
            mine = {k: v for k, v in m.items() if k.startswith("accuracy_") and k != "accuracy_finetuned"
                    and isinstance(v, float) and 0 <= v <= 1}
            norm = m.get("query_norm")
            if not (isinstance(norm, float) and math.isfinite(norm) and norm >= 0):
                norm = None  # a malformed norm is left out, the accuracy still counts
            rnd.client(node).update(
                {k: m[k] for k in ("accuracy", "accuracy_finetuned", "eval_loss", "eval_seconds") if k in m}, **mine,
                **({} if norm is None else {"query_norm": norm}))
            if by_node[node] >= n:  # a new user: reported apart, and its classes stay out of the global head
                new.append(float(m["accuracy"]))
                for k, v in mine.items():
                    new_extra.setdefault(k, []).append(v)
                continue
            accs.append(float(m["accuracy"]))
            if norm is not None:
                norms.append(norm)
            for k, v in mine.items():
                extra.setdefault(k, []).append(v)
            if "accuracy_finetuned" in m:
                tuned.append(float(m["accuracy_finetuned"]))
            if wire.STATS in r.content:
                stats.append((node, r.content[wire.STATS]))
        out: dict[str, Any] = {"eval_clients": len(accs), "new_users": len(new),
                               "acc_extra": {k: float(np.mean(v)) for k, v in sorted(extra.items())},
                               "new_acc_extra": {k: float(np.mean(v)) for k, v in sorted(new_extra.items())}}
        if accs:
            a = np.array(accs)
            out.update(acc_mean=float(a.mean()), acc_median=float(np.median(a)), acc_p10=float(np.percentile(a, 10)),
                       acc_std=float(a.std()))
        if new:
            a = np.array(new)
            out.update(new_acc_mean=float(a.mean()), new_acc_median=float(np.median(a)),
                       new_acc_p10=float(np.percentile(a, 10)))
        if tuned:
            out["acc_finetuned_mean"] = float(np.mean(tuned))
        if norms:
            out["query_norm_mean"] = float(np.mean(norms))
        if global_eval and stats:
            out.update(self._global_accuracy(server_round, partitions, stats, rnd))
        pooled = out.pop("pooled_personal", None)
        if pooled:  # FiT's oracle: the personalized accuracy is the pooled prototypes' (own support kept beside)
            for node, acc in pooled.items():
                c = rnd.client(node)
                c["accuracy_own_support"], c["accuracy"] = c.get("accuracy"), acc
            a = np.array(list(pooled.values()))
            out["acc_extra"]["accuracy_own_support"] = out.get("acc_mean")
            out.update(acc_mean=float(a.mean()), acc_median=float(np.median(a)), acc_p10=float(np.percentile(a, 10)),
                       acc_std=float(a.std()), eval_clients=len(a))
        return out

    def _exchange(self, messages: list[Message], ahead: _Ahead | None) -> tuple[list[Message], list[Failure]]:
        """Send ``messages`` and, in the same exchange, ``ahead``'s training messages (first); returns the
        replies and failures of ``messages``; ``ahead`` keeps its own for its round."""
        train = ahead.messages if ahead is not None else []
        if not (train or messages):
            return [], []
        replies = self.grid.send_and_receive(train + messages, timeout=self.cfg["timeout_s"])
        failures = self.grid.take_failures()
        if ahead is not None:
            ahead.replies = [r for r in replies if r.metadata.message_type == MessageType.TRAIN]
            ahead.failures = [f for f in failures if f.phase == wire.TRAIN]
            replies = [r for r in replies if r.metadata.message_type != MessageType.TRAIN]
            failures = [f for f in failures if f.phase != wire.TRAIN]
        return replies, failures

    def _global_accuracy(self, server_round: int, evaluated: list[int], stats: list[tuple[int, ArrayRecord]],
                         rnd: _Round) -> dict[str, Any]:
        """FiT's global accuracy: the class statistics of every training client (the evaluated ones sent
        theirs; the others are asked now) make one head of the configured family over all their classes,
        which scores the evaluated clients' query features (each image once when the features do not
        depend on the client: adapters without a task phase or personal state)."""
        cfg = self.cfg
        n = cfg["num_clients"]
        others = sorted(set(range(n)) - set(evaluated))
        nodes = self._nodes(others, rnd, wire.STATS_PHASE) if others else {}
        if nodes:
            msg = RecordDict({wire.ARRAYS: self.arrays,
                              wire.CONFIG: ConfigRecord({wire.PHASE: wire.STATS_PHASE, wire.ROUND: server_round})})
            messages = [Message(msg, dst_node_id=node, message_type=MessageType.EVALUATE)
                        for _, node in sorted(nodes.items())]
            replies = self.grid.send_and_receive(messages, timeout=cfg["timeout_s"])
            rnd.fail(self.grid.take_failures())
            stats = stats + [(int(r.metadata.src_node_id), r.content[wire.STATS]) for r in replies]
        by_node = self.directory.by_node
        gs = GlobalStatistics(self.setup.feature_dim, self.scatter)
        queries, by_client = [], []
        for node, rec in sorted(stats, key=lambda x: by_node[x[0]]):
            arrays = {k: v.numpy() for k, v in rec.items()}
            gs.add(by_node[node], arrays)
            if "query_features" in arrays:
                queries.append(arrays)
                by_client.append((node, arrays))
        out: dict[str, Any] = {"global_clients": len(gs.clients)}
        if cfg["strategy"] in ROBUST:
            dropped = gs.robust_filter()
            out["global_dropped"] = [{"client": c, "class": k} for c, k in dropped]
            out["global_unscreened"] = gs.unscreened()
        if not queries or not gs.by_class:
            return out
        e = self.layout.unpack(wire.state_of(self.arrays), copy=True).get("head/e")
        head = gs.head(self.setup.head, e, cfg["protonets_temperature"])
        feats = np.concatenate([q["query_features"] for q in queries])
        labels = np.concatenate([q["query_labels"] for q in queries])
        ids = np.concatenate([q["query_ids"] for q in queries])
        if self.setup.client_independent_features:
            keep = np.sort(np.unique(ids, return_index=True)[1])  # each image once, in arrival order
            feats, labels, ids = feats[keep], labels[keep], ids[keep]
        right = head.predict(feats) == labels
        out.update(global_acc=float(right.mean()), global_classes=len(head.class_ids), global_queries=int(len(labels)),
                   global_answers=encode_answers(ids, right))
        if cfg["method"] == "centralized" and fit_oracle(cfg):  # FiT's oracle: each client among its own classes, with their pooled statistics
            out["pooled_personal"] = pooled_personal(head, by_client)
        return out

    def _config_record(self) -> dict[str, Any]:
        """config.json: the resolved options, the state layout, where the images come from."""
        cfg, layout = self.cfg, self.layout
        return {**cfg, "name": run_name(cfg), "state_size": layout.size, "state_bytes_fp32": 4 * layout.size,
                "layout_fingerprint": layout.fingerprint, "new_users_resolved": self.setup.new_users,
                "hostile_clients": faults.hostile_clients(cfg), **_resolved(cfg), "data_images": self.setup.images,
                "data_classes": self.setup.classes, "data_skipped": self.setup.skipped or {},
                "devices_median": profile_table(self.clock.devices) if self.clock else None}

    def _restore(self) -> int | None:
        """Load the checkpoint (resume): the last complete round, or None to start from round 0."""
        ck = checkpoint.load(self.run_dir) if self.resume else None
        if ck is None:
            return None
        if ck.get("fingerprint") != self.layout.fingerprint:
            raise FederationError(f"{self.run_dir}: the checkpoint is of another model layout; start again "
                                  f"with --overwrite")
        self.arrays = wire.state_record(ck["state"])
        self.strategy = ck["strategy"]
        self.ever = ck["ever"]
        self._cum = ck["cum"]
        self.tracker_id = ck.get("tracker")
        self.ledger.releases, self.ledger.seen = ck.get("dp_ledger", (0, 0))
        if self.clock is not None and ck.get("clock") is not None:
            self.clock.now = float(ck["clock"])
        return int(ck["round"])

    def run(self) -> dict[str, Any]:

        done = self._restore()
        started: list[Callback] = []
        try:
            for cb in self.callbacks:
                cb.on_run_start(self, done)
                started.append(cb)
            return self._rounds(done)
        except BaseException as e:
            for cb in started:
                try:
                    cb.on_run_abort(self, e)
                except Exception:  # closing a tracker must not hide why the run stopped
                    pass
            raise

    def _rounds(self, done: int | None) -> dict[str, Any]:
        cfg, layout, run_dir = self.cfg, self.layout, self.run_dir
        first = 0 if done is None else done + 1
        rounds = training_rounds(cfg)
        self.progress(f"fedfit: {run_name(cfg)}: {_what(cfg, layout.size)}, {cfg['num_clients']} clients "
                      f"+ {self.setup.new_users} new users, {cfg['rounds']} rounds -> {run_dir}"
                      + (f" (resumed after round {done})" if done is not None else ""))
        if self.secret:
            self.progress(f"fedfit: dp = {cfg['dp']}, dp_randomness = secret: each round's training clients, the DP "
                          f"noise and training faults come from the operating system's entropy and are written "
                          f"nowhere, so this run is not reproducible (nor is a resumed run bit-exact); "
                          f"dp_randomness = seeded reproduces it but reports no amplified epsilon")
        if self.setup.skipped:
            self.progress(f"fedfit: {cfg['dataset']}: {self.setup.images:,} images in {self.setup.classes} classes; "
                          f"files skipped: " + ", ".join(f"{n:,} {why}" for why, n in sorted(self.setup.skipped.items())))
        t_start = time.perf_counter()
        self.directory.discover(self.metered, timeout=cfg["timeout_s"])
        if not self.directory.by_partition:
            reasons = "; ".join(r for _, r in self.directory.refused[:3]) or "no node connected"
            raise FederationError(f"no node answered with a partition-id within timeout_s = {cfg['timeout_s']:g} s "
                                  f"({reasons})")
        missing = self.directory.missing()
        if missing:
            n = cfg["num_clients"]
            train, new = [p for p in missing if p < n], [p for p in missing if p >= n]
            self.progress(f"fedfit: {len(self.directory.by_partition)} nodes answered; no node holds "
                          + ", ".join(x for x in (f"{len(train)} training partitions" if train else "",
                                                  f"{len(new)} new users' partitions" if new else "") if x)
                          + f" ({_ranges(missing)}): they are counted absent every round (start as many "
                          f"nodes as num_clients + new users = {self.setup.partitions}, or set new_users = 0)")
        resume_setup = 0
        if done is not None:  # the hello of a resumed run is the resume's cost, not its next round's
            resume_setup = sum(t.wire for t in self.meter.take())
        cum_down, cum_up = getattr(self, "_cum", (0, 0))
        ahead: _Ahead | None = None  # this round's training, already sent with the last round's evaluation
        for server_round in range(first, rounds + 1):
            t0 = time.perf_counter()
            self.meter.round = server_round
            if ahead is None:
                self.directory.refresh(self.metered, timeout=cfg["timeout_s"])
                rnd = _Round(self.directory)
            else:
                rnd = ahead.rnd
                if ahead.clock_now is not None:
                    self.clock.now = ahead.clock_now
            upload = 0
            before = wire.state_of(self.arrays)
            if server_round == 0:
                clients, loss = 0, None
            elif self.centralized:
                clients, loss, upload = self.train_central(server_round, rnd)
            elif ahead is not None:
                clients, loss = (self._aggregate(server_round, rnd, ahead.replies, ahead.failures, ahead.k)
                                 if ahead.messages else (0, None))
            else:
                clients, loss = self.train(server_round, rnd)
            moved = None if self.local_only or server_round == 0 else \
                float(np.linalg.norm(wire.state_of(self.arrays).astype(np.float64) - before))
            due = server_round % cfg["eval_every"] == 0 or server_round == rounds
            ahead = self._plan_ahead(server_round + 1) if due and server_round < rounds else None
            ev = self.evaluate(server_round, rnd, ahead) if due else {}
            transfers = self.meter.take(upto=server_round)
            if self.local_only:  # a local-only client talks to nobody: the simulator's control messages
                transfers = [t for t in transfers if t.kind != wire.TRAIN]  # carry no state and are not traffic
            gone = rnd.clock.get("offline_nodes", ())
            if gone:  # a client that went offline never sent its reply: its simulated upload is not traffic
                transfers = [t for t in transfers if not (t.direction == "up" and t.kind == wire.TRAIN
                                                          and t.node_id in gone)]
            b = _bytes(transfers)
            b["bytes_up_wire"] += upload
            b["bytes_up_payload"] += upload
            cum_down += b["bytes_down_wire"]
            cum_up += b["bytes_up_wire"]
            for t in transfers:
                if t.kind == wire.TRAIN and t.node_id in self.directory.by_node:
                    c = rnd.trainer(t.node_id)
                    c[f"{t.direction}_wire"] = c.get(f"{t.direction}_wire", 0) + t.wire
            # secret sampling: a round's simulated time is its slowest kept client's, whose seeded device
            # would name it; only the run's total goes out (summary.json)
            timed = self.clock is not None and not self.secret
            rec = RoundRecord(
                round=server_round, clients=clients, **b, cum_bytes_down_wire=cum_down, cum_bytes_up_wire=cum_up,
                cum_bytes_wire=cum_down + cum_up, train_loss=loss, update_norm=moved,
                rejected=sum(f["kind"] == "rejected" for f in rnd.failures),
                failed=sum(f["kind"] in COUNTED for f in rnd.failures),
                dp_epsilon=self.ledger.epsilon(self.strategy), dp_epsilon_sampled=self.ledger.epsilon_sampled(self.strategy),
                seconds=time.perf_counter() - t0, sim_seconds=rnd.clock.get("sim_seconds", 0.0) if timed else None,
                sim_total_s=self.clock.now if timed else None, online=rnd.clock.get("online"),
                stragglers=rnd.clock.get("stragglers", 0), offline=rnd.clock.get("offline", 0),
                **rnd.written(self.secret, self.personal_state),
                extra={"central": rnd.central} if rnd.central else {}, **ev)
            for cb in self.callbacks:
                cb.on_round_end(self, rec)
        records = self.results.records
        failures = [f for r in records for f in r.failures]
        counted = [f for f in failures if f["kind"] in COUNTED]
        summary = {"last_round": summary_record(records[-1]), "total_seconds": time.perf_counter() - t_start,
                   "run_dir": str(run_dir), "failures": len(counted), "first_failure": counted[0] if counted else None,
                   "injected": len(failures) - len(counted), "resumed_after": done,
                   "shared_parameters": layout.size, "personal_parameters": self.personal.numbers,
                   "resume_setup_bytes_wire": resume_setup, "sim_total_s": self.clock.now if self.clock else None,
                   "refused_nodes": [{"node": n, "reason": r} for n, r in self.directory.refused]}
        for cb in self.callbacks:
            cb.on_run_end(self, summary)
        return summary


COUNTED = ("error", "timeout", "absent", "rejected")  # failures that make a finished run exit 3 (not injected ones)


def run_federation(grid, cfg: dict[str, Any], progress: Callable[[str], None] = print,
                   setup: RunSetup | None = None, resume: bool = False, overwrite: bool = False,
                   callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Run ``cfg['rounds']`` rounds on ``grid`` (after the checkpoint's round with ``resume``); write the
    run directory; return the summary. ``callbacks`` run after fedfit's own (``strategies.callbacks``)."""
    return Federation(grid, cfg, setup=setup, progress=progress, resume=resume, overwrite=overwrite,
                      callbacks=callbacks).run()


def _bytes(transfers: list[Transfer]) -> dict[str, int]:
    train, ev = (wire.TRAIN,), (wire.EVALUATE, wire.STATS_PHASE)
    return dict(bytes_down_wire=total(transfers, "down", "wire", train),
                bytes_up_wire=total(transfers, "up", "wire", train),
                bytes_down_payload=total(transfers, "down", "payload", train),
                bytes_up_payload=total(transfers, "up", "payload", train),
                eval_bytes_down_wire=total(transfers, "down", "wire", ev),
                eval_bytes_up_wire=total(transfers, "up", "wire", ev),
                setup_bytes_wire=total(transfers, "down", "wire", (wire.HELLO,))
                + total(transfers, "up", "wire", (wire.HELLO,)))


def _personal_state(cfg: dict[str, Any]) -> bool:
    """Whether the adapter keeps state per client that its training writes and its evaluation reads
    (``has_personal_state``: ICIIA's history): a client's evaluation then depends on whether it trained."""
    from fedfit.adapters import ADAPTERS
    from fedfit.federated import adapter_name

    adapter = ADAPTERS.get(adapter_name(cfg))
    return bool(adapter.keeps_personal or adapter.uses_history)


def overlaps(cfg: dict[str, Any]) -> bool:
    """Whether a round's evaluation goes out with the next round's training (``overlap_eval``): not for
    the bounds, nor for adapters with personal state (ICIIA's history), which a client's evaluation
    writes and its next training reads."""
    from fedfit.adapters import ADAPTERS
    from fedfit.federated import adapter_name

    adapter = ADAPTERS.get(adapter_name(cfg))
    personal = adapter.keeps_personal or adapter.uses_history
    return bool(cfg["overlap_eval"]) and cfg["method"] not in ("local-only", "centralized") and not personal


def _ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> '0..2, 5'."""
    out, start = [], None
    for i, x in enumerate(ids):
        if start is None:
            start = x
        if i + 1 == len(ids) or ids[i + 1] != x + 1:
            out.append(f"{start}..{x}" if x > start else str(x))
            start = None
    return ", ".join(out)


def _resolved(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the options resolve to, for config.json: where every number's images come from, the steps."""
    from fedfit.centralized import UPLOAD_ENCODING
    from fedfit.clock import REFERENCE_IMAGE_SIZE, train_s_per_image
    from fedfit.centralized import central_steps
    from fedfit.config import local_steps
    from fedfit.federated import splits

    out = {"splits": splits(cfg), "local_steps_resolved": local_steps(cfg), "training_rounds": training_rounds(cfg),
           "overlap_eval_resolved": overlaps(cfg),
           "clock": {"train_s_per_image": train_s_per_image(cfg), "reference_image_size": REFERENCE_IMAGE_SIZE}}
    if cfg["method"] == "centralized":
        out.update(central_steps_resolved=central_steps(cfg), upload_encoding=UPLOAD_ENCODING)
    return out


def _what(cfg: dict[str, Any], size: int) -> str:
    """What the run trains and sends, for its first line."""
    from fedfit.centralized import central_steps
    from fedfit.config import local_steps

    sent = f"{size:,} parameters ({human_bytes(4 * size)} fp32)"
    sent_fed = f"{size:,} parameters sent ({human_bytes(4 * size)} fp32)"
    if cfg["method"] == "local-only":
        return (f"local-only (FiT's lower bound): every client fine-tunes its {sent} alone, once, "
                f"{local_steps(cfg)} steps; nothing sent")
    if cfg["method"] == "centralized":
        if fit_oracle(cfg):
            return (f"centralized (FiT's oracle): {sent} trained once on the pooled support sets, "
                    f"{central_steps(cfg)} steps of FiT's tasks; clients scored with the pooled prototypes")
        return (f"centralized (FiT's upper bound): {sent} trained on the pooled support sets, "
                f"{central_steps(cfg)} steps")
    dp_text = '' if cfg['dp'] == 'none' else ' + DP (' + cfg['dp'] + ' clipping)'
    return (f"{cfg['method']} / {cfg['strategy']}{dp_text}, {sent_fed}, {cfg['clients_per_round']} clients "
            f"per round, {local_steps(cfg)} steps each")
