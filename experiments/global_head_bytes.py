"""What the global head costs on the wire, per client: its class statistics as Flower sends them.

    python experiments/global_head_bytes.py [key=value ...]      (default: the default federation)

For each head family, training client 0 of the configured federation computes its statistics under the
initial state (``ClientWork.statistics``: counts, sums and, for LDA / QDA, the scatter factor) and the
"stats" reply that carries them is sized with fedfit's meter (``strategies.metering.wire_bytes``, the
bytes Flower's transport sends) beside its raw payload and what a dense d x d scatter would cost
(one for LDA's shared covariance, one per class for QDA's). Evaluated clients also send their query
features (m x d float32) for the server to score; that part is printed apart.
"""
from __future__ import annotations

import sys

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedfit import wire
from fedfit.config import load_config
from fedfit.federated import ClientWork, initial_state
from fedfit.format import human_bytes, markdown_table
from strategies.metering import payload_bytes, wire_bytes


def main(overrides: list[str]) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # as in a simulation
    rows = []
    for head in ("protonets", "lda", "qda"):
        cfg = load_config(overrides=[*overrides, f"head={head}", "device=cpu"])
        _, flat = initial_state(cfg)
        work = ClientWork(cfg, 0)
        stats = work.statistics(flat)
        ask = Message(RecordDict({wire.CONFIG: ConfigRecord({wire.PHASE: wire.STATS_PHASE})}), dst_node_id=1,
                      message_type="evaluate")
        reply = Message(RecordDict({wire.METRICS: MetricRecord({wire.WEIGHT: 25, wire.PARTITION: 0}),
                                    wire.STATS: wire.arrays_record(stats)}), reply_to=ask)
        d, C = stats["sums"].shape[1], len(stats["class_ids"])
        dense = {"protonets": 0, "lda": 4 * d * d, "qda": 4 * C * d * d}[head]
        rows.append([head, f"{len(work.data.support_y)} images, {C} classes, d = {d}",
                     human_bytes(payload_bytes(reply)), human_bytes(wire_bytes(reply)),
                     "-" if not dense else human_bytes(dense + 4 * C * d)])
    m, d = len(work.data.query_y), stats["sums"].shape[1]
    print(markdown_table(["head", "client 0's support set", "statistics payload", "stats reply on the wire",
                          "dense scatter instead"], rows, "llrrr"))
    print(f"\nEvaluated clients also send their query features: {m} x {d} float32 = {human_bytes(4 * m * d)} "
          f"(+ labels and ids, {human_bytes(16 * m)}).")


if __name__ == "__main__":
    main(sys.argv[1:])
