"""What one round collects before it becomes a ``fedfit.results.RoundRecord``: who trained, each client's
numbers (evaluation apart from training), the failures and the simulated clock's view; and what of it is
written under DP's secret sampling (``RoundLog.written``)."""
from __future__ import annotations

from typing import Any

from fedfit import wire
from strategies.codec_layer import Failure
from strategies.nodes import NodeDirectory

COUNTED = ("error", "timeout", "absent", "rejected")  # failures that make a finished run exit 3 (not injected ones)


class RoundLog:
    """One round's collector: evaluation numbers per client (``per_client``) apart from training ones
    (``training``: metrics, simulated finish, bytes), which ``written`` leaves out under DP's secret
    sampling; ``trained``: the sampled partitions; ``clock``: sim_seconds, online, stragglers, offline
    (``fedfit.clock``)."""

    def __init__(self, directory: NodeDirectory):
        self.directory = directory
        self.failures: list[dict[str, Any]] = []
        self.per_client: dict[int, dict[str, Any]] = {}
        self.training: dict[int, dict[str, Any]] = {}
        self.trained: list[int] = []
        self.clock: dict[str, Any] = {}

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

    def counts(self) -> dict[str, int]:
        """The record's ``rejected`` and ``failed`` (``COUNTED`` kinds) counts."""
        return {"rejected": sum(f["kind"] == "rejected" for f in self.failures),
                "failed": sum(f["kind"] in COUNTED for f in self.failures)}

    def fail(self, failures: list[Failure]) -> None:
        for f in failures:
            self.failures.append({"client": self.directory.by_node.get(f.node, -1), "phase": f.phase,
                                  "kind": f.kind, "reason": f.reason})

    def absent(self, partitions: list[int], phase: str) -> None:
        self.failures += [{"client": p, "phase": phase, "kind": "absent", "reason": "no node holds this partition"}
                          for p in partitions]

    def skipped(self, reason: str) -> None:
        """The round trains nobody (no failure of a client: ``client`` -1)."""
        self.failures.append({"client": -1, "phase": wire.TRAIN, "kind": "skipped", "reason": reason})


def personal_state(cfg: dict[str, Any]) -> bool:
    """Whether the adapter keeps state per client that its training writes and its evaluation reads
    (``has_personal_state``: ICIIA's history): a client's evaluation then depends on whether it trained."""
    from fedfit.adapters import ADAPTERS
    from fedfit.federated import adapter_name

    adapter = ADAPTERS.get(adapter_name(cfg))
    return bool(adapter.keeps_personal or adapter.uses_history)
