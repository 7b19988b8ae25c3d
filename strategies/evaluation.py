"""One round's evaluation: a seeded sample of the training clients (``eval_clients``, 0 = all) and every new
user evaluate the global state (or, for a method without a shared one, their own) on their query sets:
personalized accuracy. With ``global_eval`` the evaluated training clients also send their support sets'
class statistics and query features, and every other training client its class statistics (a "stats"
exchange): the server builds ONE head of the configured family over every class any training client
holds (``fedfit.global_head``; robustly for robust strategies) and scores the evaluated clients' query
images with it (global accuracy, FiT's second number). A method may then score the clients itself from
that head (``Method.rescore``: FiT's oracle with the pooled prototypes): its numbers replace the clients'
own personalized accuracy, which stays beside as ``accuracy_own_support``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedfit import wire
from fedfit.config import eval_clients
from fedfit.global_head import GlobalStatistics, needs_scatter
from fedfit.methods import Method
from fedfit.paired import encode_answers
from fedfit.preflight import RunSetup
from strategies import ROBUST
from strategies.exchange import Ahead, Exchanges
from strategies.global_state import GlobalState
from strategies.round_log import RoundLog
from strategies.sampling import ClientSampler


class Evaluation:
    """``run(round, rnd, ahead)`` -> the record's evaluation fields."""

    def __init__(self, cfg: dict[str, Any], method: Method, exchanges: Exchanges, sampler: ClientSampler,
                 setup: RunSetup, model: GlobalState):
        self.cfg, self.method, self.exchanges, self.sampler = cfg, method, exchanges, sampler
        self.setup, self.model, self.directory = setup, model, exchanges.directory
        self.scatter = needs_scatter(setup.head)

    def run(self, server_round: int, rnd: RoundLog, ahead: Ahead | None = None) -> dict[str, Any]:
        """Training clients (a seeded sample) and every new user evaluate. ``ahead``: the next round's
        training messages, sent in the same exchange (both start from this round's state); their replies
        and failures are kept in it for that round."""
        cfg = self.cfg
        n = cfg["num_clients"]
        partitions = self.sampler.evaluate(server_round, eval_clients(cfg)) + list(range(n, self.setup.partitions))
        nodes = self.exchanges.nodes(partitions, rnd, wire.EVALUATE)
        if not nodes:
            self.exchanges.send([], ahead)
            return {"eval_clients": 0}
        shared = self.method.shared
        global_eval = bool(cfg["global_eval"] and shared)

        def content(global_stats: bool, phase: str = wire.EVALUATE) -> RecordDict:
            return RecordDict({wire.ARRAYS: self.model.arrays if shared else ArrayRecord(),
                               wire.CONFIG: ConfigRecord({wire.PHASE: phase, wire.ROUND: server_round,
                                                          wire.GLOBAL_EVAL: global_stats})})

        trained, held_out = content(global_eval), content(False)
        messages = [Message(trained if p < n else held_out, dst_node_id=node, message_type=MessageType.EVALUATE)
                    for p, node in sorted(nodes.items())]
        replies, failures = self.exchanges.send(messages, ahead)
        rnd.fail(failures)
        self.exchanges.give_up_if_nothing_works(wire.EVALUATE, len(replies), failures)
        self.exchanges.sort(replies)
        by_node = self.directory.by_node
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
            out.update(_spread(accs), acc_std=float(np.std(accs)))
        if new:
            out.update({f"new_{k}": v for k, v in _spread(new).items()})
        if tuned:
            out["acc_finetuned_mean"] = float(np.mean(tuned))
        if norms:
            out["query_norm_mean"] = float(np.mean(norms))
        if global_eval and stats:
            out.update(self._global_accuracy(server_round, partitions, stats, rnd))
        rescored = out.pop("rescored", None)
        if rescored:  # the method's own personalized accuracy (the clients' own kept beside)
            for partition, acc in rescored.items():
                c = rnd.per_client.setdefault(partition, {})
                c["accuracy_own_support"], c["accuracy"] = c.get("accuracy"), acc
            a = list(rescored.values())
            out["acc_extra"]["accuracy_own_support"] = out.get("acc_mean")
            out.update(_spread(a), acc_std=float(np.std(a)), eval_clients=len(a))
        return out

    def _global_accuracy(self, server_round: int, evaluated: list[int], stats: list[tuple[int, ArrayRecord]],
                         rnd: RoundLog) -> dict[str, Any]:
        """FiT's global accuracy: the class statistics of every training client (the evaluated ones sent
        theirs; the others are asked now) make one head of the configured family over all their classes,
        which scores the evaluated clients' query features (each image once when the features do not
        depend on the client: adapters without a task phase or personal state)."""
        cfg = self.cfg
        n = cfg["num_clients"]
        others = sorted(set(range(n)) - set(evaluated))
        nodes = self.exchanges.nodes(others, rnd, wire.STATS_PHASE) if others else {}
        if nodes:
            msg = RecordDict({wire.ARRAYS: self.model.arrays,
                              wire.CONFIG: ConfigRecord({wire.PHASE: wire.STATS_PHASE, wire.ROUND: server_round})})
            messages = [Message(msg, dst_node_id=node, message_type=MessageType.EVALUATE)
                        for _, node in sorted(nodes.items())]
            replies, failures = self.exchanges.send(messages)
            rnd.fail(failures)
            stats = stats + [(int(r.metadata.src_node_id), r.content[wire.STATS]) for r in replies]
        by_node = self.directory.by_node
        gs = GlobalStatistics(self.setup.feature_dim, self.scatter)
        queries, by_client = [], []
        for node, rec in sorted(stats, key=lambda x: by_node[x[0]]):
            arrays = {k: v.numpy() for k, v in rec.items()}
            gs.add(by_node[node], arrays)
            if "query_features" in arrays:
                queries.append(arrays)
                by_client.append((by_node[node], arrays))
        out: dict[str, Any] = {"global_clients": len(gs.clients)}
        if cfg["strategy"] in ROBUST:
            dropped = gs.robust_filter()
            out["global_dropped"] = [{"client": c, "class": k} for c, k in dropped]
            out["global_unscreened"] = gs.unscreened()
        if not queries or not gs.by_class:
            return out
        e = self.setup.layout.unpack(self.model.flat, copy=True).get("head/e")
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
        rescored = self.method.rescore(head, by_client)  # partition -> accuracy (FiT's oracle: pooled prototypes)
        if rescored is not None:
            out["rescored"] = rescored
        return out


def _spread(accs: list[float]) -> dict[str, float]:
    """Mean, median and 10th percentile of accuracies (fractions)."""
    a = np.array(accs)
    return {"acc_mean": float(a.mean()), "acc_median": float(np.median(a)), "acc_p10": float(np.percentile(a, 10))}
