"""A SuperNode's own count of the bytes it received and sent (deployments: the ClientApp Flower loads).

The server meters a message when its ServerApp hands it to the SuperLink, and a reply when it pulls it.
Under failures those are not the bytes that crossed the network: a message for a SuperNode that died
before pulling it is metered but never sent, and a reply that comes after the server stopped waiting
is sent but never metered. So each SuperNode keeps a ledger, one file per fedfit run and partition
(``<state-dir or the run folder>/<run>.node-<partition>.traffic``), a line ``[flower run id, "rx" | "tx",
wire bytes, unix seconds, message type]`` per message, appended and fsynced when the message arrives (before any work: a SuperNode
killed while it trains keeps the count of what it pulled) and when its reply leaves. Every reply with
metrics carries the ledger's totals so far in them (``"node-traffic.<run id>.rx"`` / ``".tx"``, bytes, every
Flower run of this fedfit run, this reply itself not included: ~40 B a key), which the server takes off
and keeps (``strategies.metering.NodeCounts``). Sizes are ``fedfit.wire.wire_bytes``, as the server's.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from clients.state import state_path
from fedfit import wire

log = logging.getLogger(__name__)


def ledger_path(cfg: dict[str, Any], context: Context) -> Path:
    """This SuperNode's ledger for the run: beside its client state file, one per partition."""
    state = state_path(cfg, context)
    return state.with_name(f"{state.stem}.node-{int(context.node_config.get(wire.PARTITION, -1))}.traffic")


def append(path: Path, run_id: int, direction: str, nbytes: int, kind: str = "") -> None:
    """Add one message to the ledger (fsynced: it survives a SIGKILL right after); the time says when the
    ClientApp got the message or let its reply go (what a timed-out exchange is read from)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps([int(run_id), direction, int(nbytes), round(time.time(), 3), kind]) + "\n")
        f.flush()
        os.fsync(f.fileno())


def totals(path: Path) -> dict[int, dict[str, int]]:
    """{Flower run id: {"rx": bytes, "tx": bytes}} of the ledger (a torn or malformed line is skipped)."""
    out: dict[int, dict[str, int]] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            run_id, direction, nbytes = json.loads(line)[:3]
            counts = out.setdefault(int(run_id), {"rx": 0, "tx": 0})
            counts[str(direction)] += int(nbytes)
        except (ValueError, TypeError, KeyError):
            continue
    return out


def make_ledger_mod(config_of: Callable[[Context], dict[str, Any]]):
    """The mod that keeps the ledger (outermost: it sees the message as it arrived, the reply as it leaves)."""
    def ledger_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        try:
            path = ledger_path(config_of(context), context)
            run_id = int(msg.metadata.run_id)
            kind = str(msg.metadata.message_type)
            append(path, run_id, "rx", wire.wire_bytes(msg), kind)
        except Exception as e:  # a ledger that cannot be kept costs its counts, never the reply
            log.warning("fedfit: no byte ledger for this message (%s: %s)", type(e).__name__, e)
            return call_next(msg, context)
        reply = call_next(msg, context)
        try:
            if reply.has_content() and wire.METRICS in reply.content:
                metrics = reply.content[wire.METRICS]
                for r, counts in totals(path).items():
                    for d, n in counts.items():
                        metrics[f"{wire.NODE_TRAFFIC}.{r}.{d}"] = n
            append(path, run_id, "tx", wire.wire_bytes(reply), kind)
        except OSError as e:
            log.warning("fedfit: the byte ledger %s could not be written (%s)", path, e)
        return reply

    return ledger_mod
