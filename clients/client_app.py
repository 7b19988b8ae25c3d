"""The Flower ClientApp: a thin layer over ``fedfit.federated.ClientWork``.

Handlers see decoded float32 states (``clients.mods.make_codec_mod`` does the codec work):

* query ("hello"): which partition this node holds (``partition-id`` in its node config) and its
  state layout fingerprint, so the server can address clients by partition id;
* train: local episodic steps from the received state (or, for a method without a shared state,
  ``Method.shared`` false: ``local-only``, from the client's own, which it keeps and never sends);
* evaluate ("evaluate"): personalized accuracy on the client's query set (+ with "global-eval" the
  support set's class statistics and the query features, from which the server scores the global head);
  evaluate ("stats"): only the class statistics (training clients outside this round's evaluated sample).

Node config: ``partition-id`` (simulation sets it; a SuperNode gets it with ``--node-config``) and,
on a real SuperNode, optionally ``dataset`` / ``data-root`` / ``cache-dir`` for its own disk and
``state-dir`` for its state file. Client state kept across rounds (the local adapter of ``local-only``,
the top-k error-feedback residual) lives in a ``fedfit.client_state`` store: the run directory's
``clients.sqlite`` in simulation (so a checkpoint covers it), ``<state-dir>/<run>.sqlite`` on a SuperNode.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfit import wire
from clients.ledger import make_ledger_mod
from clients.mods import dp_clip_mod, error_mod, make_codec_mod, make_fault_mod, make_poison_mod
from clients.state import LOCAL, client_store
from fedfit.client_state import EVALUATE, TRAIN, version
from fedfit.config import load_config
from fedfit.federated import ClientWork, initial_state
from fedfit.registry import METHODS

_WORK: dict[tuple, ClientWork] = {}
_WORK_MAX = 32  # ClientWork objects hold one client's images (~2 MB at 96 px); the model is shared per process


def run_config(context: Context, bound: dict[str, Any] | None) -> dict[str, Any]:
    """The run's options: ``bound`` (``fedfit simulate``) or Flower's run config, then the node's own
    data location from its node config."""
    cfg = dict(bound) if bound is not None else load_config(
        overrides={k.replace("-", "_"): v for k, v in dict(context.run_config).items()})
    node = dict(context.node_config)
    for key in ("dataset", "data-root", "cache-dir"):
        if key in node:
            cfg[key.replace("-", "_")] = str(node[key])
    return cfg


def partition_id(context: Context) -> int:
    pid = context.node_config.get(wire.PARTITION)
    if pid is None:
        raise ValueError("this node has no partition-id in its node config (--node-config 'partition-id=N')")
    return int(pid)


def _work(context: Context, bound: dict[str, Any] | None) -> ClientWork:
    cfg = run_config(context, bound)
    pid = partition_id(context)
    key = (tuple(sorted(cfg.items())), pid)
    if key not in _WORK:
        while len(_WORK) >= _WORK_MAX:
            _WORK.pop(next(iter(_WORK)))
        _WORK[key] = ClientWork(cfg, pid, store=lambda: client_store(cfg, context))  # opened when needed
    return _WORK[key]


def _own_state(cfg: dict[str, Any]) -> bool:
    """Whether clients start from and keep their own state (a method without a shared one: local-only)."""
    return not METHODS.get(cfg["method"]).shared


def _start_state(work: ClientWork, msg: Message, context: Context, phase: int) -> np.ndarray:
    """The state to start from: the received global, or this client's own (``_own_state``)."""
    conf = wire.config_of(msg)
    if wire.LAYOUT in conf and int(conf[wire.LAYOUT]) != work.fingerprint:  # a stock server sends none: the
        raise ValueError(f"state layout fingerprint {conf.get(wire.LAYOUT)} differs from this client's "  # size
                         f"{work.fingerprint}: the server runs another model (backbone, adapter or head)")  # decides
    if _own_state(work.cfg):
        own = client_store(work.cfg, context).get(work.pid, LOCAL, version(int(conf.get(wire.ROUND, 0)), phase))
        return own if own is not None else initial_state(work.cfg)[1]
    return wire.state_of(msg.content[wire.ARRAYS], work.layout.size)


def make_client_app(cfg: dict[str, Any] | None = None, mods: tuple = ()) -> ClientApp:
    """A ClientApp bound to ``cfg`` (``fedfit simulate``), or reading the run config when None (deployed:
    the SuperNode's byte ledger, ``clients.ledger``, outermost); ``mods`` go right inside ``error_mod`` (a
    mod that raises makes an error reply like the handler would)."""
    def options(context: Context) -> dict[str, Any]:
        return run_config(context, cfg)

    ledger = [make_ledger_mod(options)] if cfg is None else []  # deployed: the SuperNode counts its own bytes
    app = ClientApp(mods=[*ledger, error_mod, *mods, make_fault_mod(options), make_poison_mod(options),
                          make_codec_mod(options)])

    @app.query()
    def hello(msg: Message, context: Context) -> Message:
        metrics = {wire.PARTITION: partition_id(context), wire.WEIGHT: 1}
        return Message(RecordDict({wire.METRICS: MetricRecord(metrics)}), reply_to=msg)

    @app.train(mods=[dp_clip_mod])
    def train(msg: Message, context: Context) -> Message:
        work = _work(context, cfg)
        conf = wire.config_of(msg)
        server_round = int(conf.get(wire.ROUND, 1))
        start = _start_state(work, msg, context, TRAIN)
        new, metrics = work.train(start, server_round, prox_mu=float(conf.get("proximal-mu", 0.0)))
        metrics.update({wire.PARTITION: work.pid, wire.LAYOUT: work.fingerprint})
        if _own_state(work.cfg):
            client_store(work.cfg, context).put(work.pid, LOCAL, version(server_round, TRAIN), new)
            arrays = ArrayRecord()
        else:
            arrays = wire.state_record(new)
        return Message(RecordDict({wire.ARRAYS: arrays, wire.METRICS: MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        work = _work(context, cfg)
        conf = wire.config_of(msg)
        state = _start_state(work, msg, context, EVALUATE)
        server_round = int(conf.get(wire.ROUND, 0))
        ident = {wire.PARTITION: work.pid, wire.LAYOUT: work.fingerprint}
        if conf.get(wire.PHASE) == wire.STATS_PHASE:  # only the class statistics for the global head
            stats = work.statistics(state, server_round)
            metrics = {**ident, wire.WEIGHT: max(int(stats["counts"].sum()), 1)}
            return Message(RecordDict({wire.METRICS: MetricRecord(metrics), wire.STATS: wire.arrays_record(stats)}),
                           reply_to=msg)
        metrics, stats = work.evaluate(state, server_round, personalize_steps=work.cfg["personalize_steps"],
                                       class_stats=bool(conf.get(wire.GLOBAL_EVAL, False)))
        metrics.update(ident)
        content: dict[str, Any] = {wire.METRICS: MetricRecord(metrics)}
        if stats is not None:
            content[wire.STATS] = wire.arrays_record(stats)
        return Message(RecordDict(content), reply_to=msg)

    return app


app = make_client_app()
