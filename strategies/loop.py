"""The server's round loop: train, evaluate, meter, write one results line per round.

Round 0 evaluates the initial state (the frozen backbone's head). Each round r >= 1: the strategy
samples clients and sends the (encoded) global state; replies are validated, decoded and aggregated;
then clients evaluate the new global state on their own query sets (personalized accuracy) and,
with ``global_eval``, a second exchange scores every client's query set against class means
aggregated from all evaluated clients (global accuracy, all classes, nearest mean).
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedfit.config import run_name
from fedfit.federated import initial_state
from fedfit.results import RoundRecord, RunWriter
from strategies import create_strategy
from strategies.base import state_of, state_record
from strategies.metering import Meter, MeteredGrid, total


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000.0
    return str(n)


def _global_eval(grid, strategy, arrays: ArrayRecord, replies_stats, timeout: float) -> tuple[float | None, int]:
    """Aggregate class sums from evaluation replies, send the global class means, count correct answers."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, float] = {}
    nodes = []
    for node, rec in replies_stats:
        ids, cnt, tot = rec["class_ids"].numpy(), rec["counts"].numpy(), rec["sums"].numpy()
        if ids.ndim != 1 or cnt.shape != ids.shape or tot.ndim != 2 or tot.shape[0] != ids.shape[0] \
                or not np.all(np.isfinite(tot)) or np.any(cnt < 0):
            continue  # malformed statistics are ignored
        nodes.append(node)
        for i, c, s in zip(ids.tolist(), cnt, tot):
            sums[i] = sums.get(i, 0) + s
            counts[i] = counts.get(i, 0) + float(c)
    if not sums:
        return None, 0
    ids = np.array(sorted(sums), dtype=np.int64)
    means = np.stack([sums[i] / max(counts[i], 1.0) for i in ids]).astype(np.float32)
    means_rec = ArrayRecord({"class_ids": Array(ids), "means": Array(means)})
    msgs = [Message(content=RecordDict({"arrays": arrays, "means": means_rec,
                                        "config": ConfigRecord({"phase": "global"})}),
                    dst_node_id=n, message_type=MessageType.EVALUATE) for n in nodes]
    msgs = strategy.encode_down(msgs, arrays)
    correct = seen = 0
    for r in grid.send_and_receive(msgs, timeout=timeout):
        if r.has_error() or "metrics" not in r.content:
            continue
        m = r.content["metrics"]
        correct += int(m.get("global_correct", 0))
        seen += int(m.get("global_total", 0))
    return (correct / seen if seen else None), len(nodes)


def _evaluate(grid, strategy, cfg, arrays: ArrayRecord, server_round: int) -> dict[str, Any]:
    strategy.eval_metrics = []
    config = ConfigRecord({"phase": "evaluate", "server-round": server_round,
                           "global-eval": bool(cfg["global_eval"] and cfg["method"] != "local-only")})
    replies = list(grid.send_and_receive(strategy.configure_evaluate(server_round, arrays, config, grid),
                                         timeout=cfg["timeout_s"]))
    strategy.aggregate_evaluate(server_round, replies)
    accs = np.array([m["accuracy"] for _, m in strategy.eval_metrics if "accuracy" in m], dtype=float)
    ft = [m["accuracy_finetuned"] for _, m in strategy.eval_metrics if "accuracy_finetuned" in m]
    out: dict[str, Any] = {"eval_clients": int(accs.size)}
    if accs.size:
        out.update(acc_mean=float(accs.mean()), acc_median=float(np.median(accs)),
                   acc_p10=float(np.percentile(accs, 10)), acc_std=float(accs.std()))
    if ft:
        out["acc_finetuned_mean"] = float(np.mean(ft))
    if config["global-eval"]:
        stats = [(r.metadata.src_node_id, r.content["stats"]) for r in replies
                 if not r.has_error() and isinstance(r.content.get("stats"), ArrayRecord)]
        out["global_acc"], _ = _global_eval(grid, strategy, arrays, stats, cfg["timeout_s"])
    return out


def _bytes(transfers) -> dict[str, int]:
    train, ev = ("train",), ("evaluate", "global")
    return dict(bytes_down_wire=total(transfers, "down", "wire", train), bytes_up_wire=total(transfers, "up", "wire", train),
                bytes_down_payload=total(transfers, "down", "payload", train),
                bytes_up_payload=total(transfers, "up", "payload", train),
                eval_bytes_down_wire=total(transfers, "down", "wire", ev), eval_bytes_up_wire=total(transfers, "up", "wire", ev))


def run_federation(grid, cfg: dict[str, Any], progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``cfg['rounds']`` rounds on ``grid``; write the run directory; return the summary."""
    random.seed(cfg["seed"])  # Flower samples clients with the global `random`
    layout, flat = initial_state(cfg)
    strategy = create_strategy(cfg, layout.size)
    meter = Meter()
    g = MeteredGrid(grid, meter)
    run_dir = Path(cfg["out_dir"]) / run_name(cfg)
    writer = RunWriter(run_dir, {**cfg, "name": run_name(cfg), "state_size": layout.size,
                                 "state_bytes_fp32": 4 * layout.size})
    progress(f"fedfit: {run_name(cfg)}: {cfg['method']} / {cfg['strategy']}, {layout.size:,} parameters sent "
             f"({_human(4 * layout.size)} fp32), {cfg['num_clients']} clients, {cfg['clients_per_round']} per round, "
             f"{cfg['rounds']} rounds -> {run_dir}")
    arrays = state_record(flat)
    cum_down = cum_up = 0
    t_start = time.perf_counter()
    for rnd in range(0, cfg["rounds"] + 1):
        t0 = time.perf_counter()
        n_rejected = len(strategy.rejected)
        clients, loss = 0, None
        if rnd > 0:
            config = ConfigRecord({"server-round": rnd})
            replies = list(g.send_and_receive(strategy.configure_train(rnd, arrays, config, g), timeout=cfg["timeout_s"]))
            losses = [r.content["metrics"].get("train_loss") for r in replies
                      if not r.has_error() and "metrics" in r.content]
            losses = [x for x in losses if isinstance(x, float)]
            loss = float(np.mean(losses)) if losses else None
            new_arrays, _ = strategy.aggregate_train(rnd, replies)
            clients = len(replies) - (len(strategy.rejected) - n_rejected)
            if new_arrays is not None:
                arrays = state_record(state_of(new_arrays).astype(np.float32))
        ev = _evaluate(g, strategy, cfg, arrays, rnd)
        transfers = meter.take()
        b = _bytes(transfers)
        cum_down += b["bytes_down_wire"]
        cum_up += b["bytes_up_wire"]
        per_client: dict[int, dict[str, int]] = {}
        for t in transfers:
            if t.kind == "train":
                per_client.setdefault(t.node_id, {"down": 0, "up": 0})[t.direction] += t.wire
        rec = RoundRecord(round=rnd, clients=clients, **b, cum_bytes_down_wire=cum_down, cum_bytes_up_wire=cum_up,
                          cum_bytes_wire=cum_down + cum_up, train_loss=loss, rejected=len(strategy.rejected) - n_rejected,
                          seconds=time.perf_counter() - t0, **ev,
                          extra={"train_bytes_per_client": {str(k): v for k, v in per_client.items()}})
        writer.write(rec)
        progress(_round_line(rec, cfg["rounds"]))
    writer.save_state(layout.unpack(state_of(arrays), copy=True))
    last = writer.records[-1]
    summary = writer.finish(total_seconds=time.perf_counter() - t_start, run_dir=str(run_dir),
                            rejected=[{"node": n, "reason": r} for n, r in strategy.rejected])
    progress(f"fedfit: done in {summary['total_seconds']:.0f} s: personalized accuracy "
             f"{_pct(last.acc_mean)} (round 0: {_pct(writer.records[0].acc_mean)}), global {_pct(last.global_acc)}, "
             f"{_human(last.cum_bytes_wire)} sent for training; results in {run_dir}")
    return summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _round_line(r: RoundRecord, rounds: int) -> str:
    per = f"{_human(r.bytes_up_wire / r.clients)}/client up" if r.clients else "no training"
    loss = f" | loss {r.train_loss:.3f}" if r.train_loss is not None else ""
    rej = f" | {r.rejected} rejected" if r.rejected else ""
    return (f"round {r.round:>3}/{rounds} | {r.clients} trained, {per}, total {_human(r.cum_bytes_wire)} | "
            f"acc {_pct(r.acc_mean)} (median {_pct(r.acc_median)}, p10 {_pct(r.acc_p10)}, {r.eval_clients} clients) | "
            f"global {_pct(r.global_acc)}{loss}{rej} | {r.seconds:.1f} s")
