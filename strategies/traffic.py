"""Byte accounting of a round: the meter's transfers (``strategies.metering``) of the round, as the record's
byte fields and the cumulative training traffic.

What is not learning traffic is left out: the training messages of a method without a shared state
(local-only: they carry no state, they are the simulator's control messages) and the simulated upload
of a client that went offline before its reply. Bytes a method sent outside the clients' messages
(``upload``: the centralized bound's pooled images) count as training upload.
"""
from __future__ import annotations

from typing import Any

from fedfit import wire
from strategies.metering import Meter, Transfer, total
from strategies.nodes import NodeDirectory
from strategies.round_log import RoundLog


class Traffic:
    """The run's byte accounting over ``meter``; ``counts_training``: whether training messages are traffic.
    Its state (checkpointed): the cumulative training bytes down and up."""

    def __init__(self, meter: Meter, directory: NodeDirectory, counts_training: bool = True):
        self.meter, self.directory, self.counts_training = meter, directory, counts_training
        self.cum_down = self.cum_up = 0

    def setup_bytes(self) -> int:
        """Every byte metered so far (a resumed run's hello: the resume's cost, not its next round's)."""
        return sum(t.wire for t in self.meter.take())

    def round(self, server_round: int, rnd: RoundLog, upload: int = 0) -> dict[str, int]:
        """The record's byte fields of round ``server_round`` (its transfers leave the meter); each training
        client's own bytes go into ``rnd``."""
        transfers = self.meter.take(upto=server_round)
        if not self.counts_training:
            transfers = [t for t in transfers if t.kind != wire.TRAIN]
        gone = rnd.clock.get("offline_nodes", ())
        if gone:  # a client that went offline never sent its reply: its simulated upload is not traffic
            transfers = [t for t in transfers if not (t.direction == "up" and t.kind == wire.TRAIN
                                                      and t.node_id in gone)]
        b = _bytes(transfers)
        b["bytes_up_wire"] += upload
        b["bytes_up_payload"] += upload
        self.cum_down += b["bytes_down_wire"]
        self.cum_up += b["bytes_up_wire"]
        for t in transfers:
            if t.kind == wire.TRAIN and t.node_id in self.directory.by_node:
                c = rnd.trainer(t.node_id)
                c[f"{t.direction}_wire"] = c.get(f"{t.direction}_wire", 0) + t.wire
        return {**b, "cum_bytes_down_wire": self.cum_down, "cum_bytes_up_wire": self.cum_up,
                "cum_bytes_wire": self.cum_down + self.cum_up}

    def state(self) -> dict[str, Any]:
        return {"cum_down": self.cum_down, "cum_up": self.cum_up}

    def load_state(self, state: dict[str, Any]) -> None:
        self.cum_down, self.cum_up = int(state["cum_down"]), int(state["cum_up"])


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
