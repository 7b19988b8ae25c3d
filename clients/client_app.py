"""The Flower ClientApp: decode the global state, run ``ClientWork``, encode the reply.

Per process, the k-shot partition and the frozen backbone are built once and reused (see
``fedfit.federated``). Node config: ``partition-id`` / ``num-partitions`` (simulation), or
``partition-id`` plus optional ``data-root`` / ``dataset`` on a real SuperNode (deployment).
Client state kept across rounds in ``context.state``: the local adapter (``local-only``) and the
top-k error-feedback residual.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfit.codec import ErrorFeedback, create_codec
from fedfit.config import load_config
from fedfit.federated import ClientWork
from strategies.base import arrays_record, decode_record, encode_record

_WORK: dict[tuple, ClientWork] = {}


def _config(context: Context, bound: dict[str, Any] | None) -> dict[str, Any]:
    cfg = dict(bound) if bound is not None else load_config(
        overrides={k.replace("-", "_"): v for k, v in dict(context.run_config).items()})
    node = dict(context.node_config)
    for key in ("dataset", "data-root", "cache-dir"):  # a real SuperNode may name its own data
        if key in node:
            cfg[key.replace("-", "_")] = str(node[key])
    return cfg


def _work(context: Context, bound: dict[str, Any] | None) -> ClientWork:
    cfg = _config(context, bound)
    pid = int(context.node_config.get("partition-id", 0))
    key = (tuple(sorted(cfg.items())), pid)
    if key not in _WORK:
        _WORK[key] = ClientWork(cfg, pid)
    return _WORK[key]


def _received_state(work: ClientWork, msg: Message, context: Context) -> np.ndarray:
    """The state to start from: the decoded global, or this client's own for ``local-only``."""
    if work.cfg["method"] == "local-only":
        if "local" in context.state:
            return context.state["local"]["state"].numpy()
        from fedfit.federated import initial_state

        return initial_state(work.cfg)[1]
    return decode_record(create_codec(work.cfg["codec_down"]), msg.content["arrays"], work.layout.size)


def _encode_update(work: ClientWork, context: Context, new: np.ndarray, start: np.ndarray) -> ArrayRecord:
    cfg = work.cfg
    if cfg["method"] == "local-only":
        context.state["local"] = ArrayRecord({"state": Array(new)})
        return ArrayRecord()
    vec = (new - start) if cfg["delta"] else new
    codec = create_codec(cfg["codec_up"])
    if cfg["error_feedback"] and codec.spec.startswith("topk"):
        res = context.state["ef"]["residual"].numpy() if "ef" in context.state else None
        ef = ErrorFeedback(codec, residual=res)
        enc = ef.encode(vec.astype(np.float32))
        context.state["ef"] = ArrayRecord({"residual": Array(ef.residual)})
        return arrays_record(enc)
    return encode_record(codec, vec.astype(np.float32))


def make_client_app(cfg: dict[str, Any] | None = None) -> ClientApp:
    """A ClientApp bound to ``cfg`` (``fedfit simulate``), or reading the run config when None."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        work = _work(context, cfg)
        conf = msg.content["config"]
        start = _received_state(work, msg, context)
        mu = float(conf.get("proximal-mu", 0.0))
        new, metrics = work.train(start, int(conf.get("server-round", 1)), prox_mu=mu)
        arrays = _encode_update(work, context, new, start)
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        work = _work(context, cfg)
        conf = msg.content["config"]
        state = _received_state(work, msg, context)
        if conf.get("phase") == "global":
            means = msg.content["means"]
            correct, seen = work.global_correct(state, means["class_ids"].numpy(), means["means"].numpy())
            return Message(RecordDict({"metrics": MetricRecord(
                {"global_correct": correct, "global_total": seen, "num-examples": seen})}), reply_to=msg)
        metrics = work.evaluate(state, personalize_steps=work.cfg["personalize_steps"])
        content = {"metrics": MetricRecord(metrics)}
        if conf.get("global-eval", False):
            ids, counts, sums = work.class_sums(state)
            content["stats"] = ArrayRecord({"class_ids": Array(ids), "counts": Array(counts.astype(np.float32)),
                                            "sums": Array(sums)})
        return Message(RecordDict(content), reply_to=msg)

    return app


app = make_client_app()
