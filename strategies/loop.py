"""The server's round loop: any method (``fedfit.methods``) over a Grid: train, evaluate, meter, write one
line per round and the checkpoint.

The Grid is wrapped, innermost first, by the meter (bytes as serialized, ``strategies.metering``), the
codec layer (encode the downlink once per round, validate and decode every reply) and, per round, a view
that shows the strategy only the sampled clients' nodes. The strategy is a stock Flower one and sees
float32 states.

Round 0 evaluates the initial state (the frozen backbone's head). Round r >= 1 trains as the method says
(``Method.on_server``: the server trains; else the clients sampled by ``strategies.training``, from the
run's seed - under DP's secret sampling, ``dp_randomness = secret``, from the operating system's entropy,
and ``RoundLog.written`` keeps every trace of who trained out of the results; see ``strategies.dp``),
then ``strategies.evaluation`` evaluates the new state every ``eval_every`` rounds and at the last.

With ``overlap_eval`` (the default) an evaluated round's evaluation messages go out in ONE exchange
with the next round's training messages: both start from the same state, so the actors that a
round's few training clients leave idle evaluate meanwhile. The replies are split by type: the
evaluation's make this round's record, the training's are kept for the next round, whose record
gets them (and their bytes: the meter counts each message in its own round). The results are those
of the sequential order (a test pins it); only the rounds' wall times move (round 0 then holds
round 1's training, the last round only its evaluation).

Failed client messages (errors, timeouts, absent nodes, rejected replies) are recorded with their
reasons and the round goes on with the rest; a run in which no client can train (or evaluate) at
all stops with ``FederationError`` naming the first client error.

After every round the loop writes its results line (``fedfit.results.RunWriter``), then its checkpoint
(``strategies.checkpoint``: each stateful part saves its own state), then calls the callbacks
(``strategies.callbacks``) with a read-only view of the run. ``resume=True`` continues after the last
complete round and ends exactly as an uninterrupted run (under DP's secret sampling it continues with
fresh samples and noise: not bit-exact, but the accountant's state carries on).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Sequence

import numpy as np

from fedfit import seeding
from fedfit.clock import Clock
from fedfit.config import run_name, training_rounds
from fedfit.global_head import ClassLimits, needs_scatter
from fedfit.methods import method_of
from fedfit.preflight import RunSetup, prepare
from fedfit.results import RoundRecord, RunWriter, check_run_dir, check_same_options
from fedfit.saveable import Saveable
from strategies import checkpoint
from strategies.aggregation import Aggregator
from strategies.callbacks import Callback, PrintProgress, ReportPersonalState, RunView, Track
from strategies.codec_layer import CodecGrid
from strategies.evaluation import Evaluation
from strategies.exchange import Ahead, Exchanges, FederationError
from strategies.global_state import GlobalState
from strategies.metering import Meter, MeteredGrid, journal_bytes
from strategies.nodes import NodeDirectory, hello_messages
from strategies.push_errors import PushTolerantGrid
from strategies.round_log import COUNTED, RoundLog, personal_state
from strategies.run_header import announce, announce_missing, config_record
from strategies.sampling import ClientSampler
from strategies.traffic import Traffic
from strategies.training import Training

__all__ = ["COUNTED", "Federation", "FederationError", "run_federation"]

PENDING_TRAFFIC = "pending_traffic.jsonl"  # the meter's journal in the run folder (strategies.metering.Meter)


class Federation:
    """One run's server side over ``grid``; ``run()`` returns the summary."""

    def __init__(self, grid, cfg: dict[str, Any], setup: RunSetup | None = None,
                 progress: Callable[[str], None] = print, resume: bool = False, overwrite: bool = False,
                 callbacks: Sequence[Callback] = ()):
        resume = resume or bool(cfg.get("resume"))
        self.cfg, self.progress, self.resume, self.overwrite = cfg, progress, resume, overwrite
        self.run_dir = Path(cfg["out_dir"]) / run_name(cfg)
        check_run_dir(self.run_dir, resume, overwrite)
        if resume:
            check_same_options(self.run_dir, cfg)
        self.setup = setup or prepare({**cfg, "device": "cpu"})  # the server holds no GPU for the run
        self.layout = self.setup.layout
        self.method = method_of(cfg)
        # the simulated clock (fedfit.clock): the devices of clients that train; none when the server does
        self.clock = None if self.method.on_server else Clock(cfg, self.setup.partitions)
        self.config = config_record(cfg, self.setup, self.method, self.clock)
        self.personal = ReportPersonalState(progress)
        own: list[Callback] = [PrintProgress(progress, training_rounds(cfg)), self.personal]
        if cfg["tracker"] != "none":
            own.append(Track(cfg["tracker"]))
        self.callbacks: list[Callback] = [*own, *callbacks]
        self.pushes = grid = PushTolerantGrid(grid, progress)  # a push Flower gives up on costs clients, not the run
        for cb in self.callbacks:
            grid = cb.wrap_grid(grid)
        self.meter = Meter(journal=self.run_dir / PENDING_TRAFFIC)
        self._resume_bytes = 0  # what resuming cost, until the first round this run records carries it
        self.metered = MeteredGrid(grid, self.meter)
        codec = CodecGrid(self.metered, cfg["codec_down"], cfg["codec_up"], cfg["delta"], self.layout.fingerprint,
                          self.layout.size, feature_dim=self.setup.feature_dim,
                          scatter=needs_scatter(self.setup.head), class_limits=ClassLimits.of(cfg),
                          max_reply_bytes=int(cfg["max_reply_mb"] * 1e6))
        self.directory = NodeDirectory(self.setup.partitions)
        self.secret = seeding.secret(cfg)  # DP's secret sampling: nothing written tells who trained
        self.personal_state = personal_state(cfg)
        sampler = ClientSampler(cfg["seed"], cfg["num_clients"], secret=self.secret)
        self.model = GlobalState(self.setup.initial)
        self.exchanges = Exchanges(codec, self.directory, cfg["timeout_s"], cfg["max_failures"])
        self.aggregator = Aggregator(cfg, self.layout.size, self.secret)
        self.training = Training(cfg, self.method, self.exchanges, self.metered, self.meter, sampler, self.clock,
                                 self.aggregator, self.model)
        self.evaluation = Evaluation(cfg, self.method, self.exchanges, sampler, self.setup, self.model)
        self.traffic = Traffic(self.meter, self.directory, counts_training=self.method.shared)
        self.writer: RunWriter | None = None

    def parts(self) -> dict[str, Saveable]:
        """The run's stateful parts by name, as the checkpoint holds them."""
        parts: dict[str, Saveable] = {"global": self.model, "strategy": self.aggregator,
                                      "ledger": self.aggregator.ledger, "exchanges": self.exchanges,
                                      "traffic": self.traffic, "method": self.method,
                                      "node_counts": self.metered.nodes}
        if self.clock is not None:
            parts["clock"] = self.clock
        parts.update({cb.checkpoint_key: cb for cb in self.callbacks if getattr(cb, "checkpoint_key", None)})
        return parts

    def view(self) -> RunView:
        """What callbacks see of the run."""
        return RunView(MappingProxyType(self.cfg), self.run_dir, MappingProxyType(self.config),
                       tuple(self.writer.records) if self.writer else ())

    def _restore(self) -> int | None:
        """Load the checkpoint (resume): the last complete round, or None to start from round 0."""
        ck = checkpoint.load(self.run_dir) if self.resume else None
        if ck is None:
            return None
        if ck.fingerprint != self.layout.fingerprint:
            raise FederationError(f"{self.run_dir}: the checkpoint is of another model layout; start again "
                                  f"with --overwrite")
        ck.restore(self.parts())
        return ck.round

    def run(self) -> dict[str, Any]:
        done = self._restore()
        self.writer = RunWriter(self.run_dir, self.config, resume_after=done,
                                overwrite=self.overwrite and done is None)
        started: list[Callback] = []
        try:
            for cb in self.callbacks:
                cb.on_run_start(self.view(), done)
                started.append(cb)
            return self._rounds(done)
        except BaseException as e:
            for cb in started:
                try:
                    cb.on_run_abort(self.view(), e)
                except Exception:  # closing a tracker must not hide why the run stopped
                    pass
            raise

    def _rounds(self, done: int | None) -> dict[str, Any]:
        cfg = self.cfg
        rounds = training_rounds(cfg)
        announce(self.progress, cfg, self.setup, self.method, self.run_dir, done, self.secret)
        lost = journal_bytes(self.meter.journal) if done is not None else 0  # an interrupted attempt's messages
        self.meter.journal.unlink(missing_ok=True)
        t_start = time.perf_counter()
        self.directory.discover(self.metered, timeout=cfg["timeout_s"])
        if not self.directory.by_partition:
            reasons = "; ".join(r for _, r in self.directory.refused[:3]) or "no node connected"
            raise FederationError(f"no node answered with a partition-id within timeout_s = {cfg['timeout_s']:g} s "
                                  f"({reasons})")
        announce_missing(self.progress, cfg, self.setup, self.directory)
        resume_setup = self.traffic.setup_bytes() if done is not None else 0  # the resume's cost, not its round's
        self._resume_bytes = lost + resume_setup
        ahead: Ahead | None = None  # this round's training, already sent with the last round's evaluation
        for server_round in range(0 if done is None else done + 1, rounds + 1):
            record, ahead = self._round(server_round, rounds, ahead)
            self.writer.write(record)
            checkpoint.save(self.run_dir, server_round, self.layout.fingerprint, self.parts())
            view = self.view()
            for cb in self.callbacks:
                cb.on_round_end(view, record)
        final = self._final_ledgers()
        records = self.writer.records
        failures = [f for r in records for f in r.failures]
        counted = [f for f in failures if f["kind"] in COUNTED]
        summary = {"last_round": asdict(records[-1]), "total_seconds": time.perf_counter() - t_start,
                   "run_dir": str(self.run_dir), "failures": len(counted),
                   "first_failure": counted[0] if counted else None, "injected": len(failures) - len(counted),
                   "resumed_after": done, "shared_parameters": self.layout.size,
                   "personal_parameters": self.personal.numbers, "resume_setup_bytes_wire": resume_setup,
                   "resume_lost_bytes_wire": lost, "node_counted_bytes_wire": self.metered.nodes.total(),
                   "node_counted_by_run": self.metered.nodes.by_run() or None,
                   "push_errors": len(self.pushes.push_errors), "final_bytes_wire": final,
                   "sim_total_s": self.clock.now if self.clock else None,
                   "refused_nodes": [{"node": n, "reason": r} for n, r in self.directory.refused]}
        self.writer.save_state(self.layout.unpack(self.model.flat, copy=True))
        self.writer.finish(**{k: v for k, v in summary.items() if k != "last_round"})
        view = self.view()
        for cb in self.callbacks:
            cb.on_run_end(view, summary)
        return summary

    def _final_ledgers(self) -> int:
        """Deployed (a reply carried a SuperNode's byte ledger, ``clients.ledger``): one last hello to every
        connected node collects each one's totals, so what a node pulled after its last answer (a message it
        was killed on, a reply that came too late) is counted; returns the hello exchange's wire bytes."""
        if not self.metered.nodes.latest:
            return 0
        self.metered.send_and_receive(hello_messages(self.metered.get_node_ids()), timeout=self.cfg["timeout_s"])
        return self.traffic.setup_bytes()

    def _round(self, server_round: int, rounds: int, ahead: Ahead | None) -> tuple[RoundRecord, Ahead | None]:
        """Round ``server_round``: its training (already sent with the last evaluation when ``ahead``), its
        evaluation when due (with the next round's training, when they overlap), its record."""
        t0 = time.perf_counter()
        self.meter.round = server_round
        if ahead is None:
            self.directory.refresh(self.metered, timeout=self.cfg["timeout_s"])
            rnd = RoundLog(self.directory)
        else:
            rnd = ahead.rnd
            if ahead.clock_now is not None:
                self.clock.now = ahead.clock_now
        upload = 0
        before = self.model.flat
        if server_round == 0:
            clients, loss = 0, None
        elif self.method.on_server:
            step = self.method.train_on_server(server_round, before)
            self.model.set(step.state)
            clients, loss, upload = step.clients, step.loss, step.upload
        elif ahead is not None:
            clients, loss = (self.training.finish(server_round, rnd, ahead.replies, ahead.failures, ahead.k)
                             if ahead.messages else (0, None))
        else:
            clients, loss = self.training.run(server_round, rnd)
        moved = None if not self.method.shared or server_round == 0 else \
            float(np.linalg.norm(self.model.flat.astype(np.float64) - before))
        due = server_round % self.cfg["eval_every"] == 0 or server_round == rounds
        ahead = self.training.plan_ahead(server_round + 1) if due and server_round < rounds else None
        ev = self.evaluation.run(server_round, rnd, ahead) if due else {}
        traffic = self.traffic.round(server_round, rnd, upload)
        resumed, self._resume_bytes = self._resume_bytes, 0
        # secret sampling: a round's simulated time is its slowest kept client's, whose seeded device
        # would name it; only the run's total goes out (summary.json)
        timed = self.clock is not None and not self.secret
        record = RoundRecord(
            round=server_round, clients=clients, **traffic, resume_bytes_wire=resumed, train_loss=loss,
            update_norm=moved, **rnd.counts(),
            **self.aggregator.epsilons(), seconds=time.perf_counter() - t0,
            sim_seconds=rnd.clock.get("sim_seconds", 0.0) if timed else None,
            sim_total_s=self.clock.now if timed else None, online=rnd.clock.get("online"),
            stragglers=rnd.clock.get("stragglers", 0), offline=rnd.clock.get("offline", 0),
            **rnd.written(self.secret, self.personal_state), extra=self.method.extra(server_round), **ev)
        return record, ahead


def run_federation(grid, cfg: dict[str, Any], progress: Callable[[str], None] = print,
                   setup: RunSetup | None = None, resume: bool = False, overwrite: bool = False,
                   callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Run ``cfg['rounds']`` rounds on ``grid`` (after the checkpoint's round with ``resume``); write the
    run directory; return the summary. ``callbacks`` run after fedfit's own (``strategies.callbacks``)."""
    return Federation(grid, cfg, setup=setup, progress=progress, resume=resume, overwrite=overwrite,
                      callbacks=callbacks).run()
