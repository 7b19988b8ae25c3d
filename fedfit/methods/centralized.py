"""``centralized``: FiT's upper bounds, trained on the server over every training client's pooled support
images (``fedfit.centralized``): ``central_tasks = pool`` (budget-matched, client-sized tasks across the
pool) or ``client`` (each step one client's own task) over the rounds; ``fit``: FiT's own oracle, trained
once, each client then scored with the pooled prototypes of its classes (``rescore``). The clients only
evaluate; the pooled images' upload is round 1's traffic; no simulated devices (nothing trains on one)."""
from __future__ import annotations

from typing import Any

import numpy as np

from fedfit.methods.base import METHODS, Method, ServerStep

REPORTED = ("train_loss", "train_steps", "train_seconds", "update_norm", "pooled_images")  # the record's extra


@METHODS.register("centralized")
class Centralized(Method):
    name = "centralized"
    on_server = True
    overlap = False
    aggregates = False

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        self._trainer = None  # fedfit.centralized.CentralTrainer, made when first needed
        self._reported: dict[int, dict[str, Any]] = {}

    @classmethod
    def problem(cls, cfg: dict[str, Any]) -> str | None:
        if cfg["adapter"] == "iciia":
            return ("method = centralized pools support images of many clients, but ICIIA attends over each "
                    "client's own history: use method = fit or local-only with adapter = iciia")
        if cfg["central_tasks"] == "fit" and not cfg["global_eval"]:
            return ("central_tasks = fit scores each client with the pooled prototypes of its classes, built from "
                    "every client's class statistics: it needs global_eval = true")
        return super().problem(cfg)

    @property
    def oracle(self) -> bool:
        """FiT's own oracle (``central_tasks = fit``)."""
        from fedfit.centralized import fit_oracle

        return fit_oracle(self.cfg)

    def training_rounds(self) -> int:
        return min(int(self.cfg["rounds"]), 1) if self.oracle else int(self.cfg["rounds"])

    def train_on_server(self, server_round: int, state: np.ndarray) -> ServerStep:
        from fedfit.centralized import CentralTrainer

        if self._trainer is None:
            self._trainer = CentralTrainer(self.cfg)
        new, m = self._trainer.train(state, server_round)
        self._reported[server_round] = {k: m[k] for k in REPORTED if k in m}
        upload = self._trainer.upload_bytes() if server_round == 1 else 0  # the pool goes up once
        return ServerStep(new, int(self.cfg["num_clients"]), m.get("train_loss"), upload)

    def extra(self, server_round: int) -> dict[str, Any]:
        central = self._reported.pop(server_round, None)
        return {"central": central} if central else {}

    def rescore(self, head, queries):
        if not self.oracle:
            return None
        from fedfit.centralized import pooled_personal

        return pooled_personal(head, queries)

    def describe(self, size: int) -> str:
        from fedfit.centralized import central_steps
        from fedfit.format import human_bytes

        sent, steps = f"{size:,} parameters ({human_bytes(4 * size)} fp32)", central_steps(self.cfg)
        if self.oracle:
            return (f"centralized (FiT's oracle): {sent} trained once on the pooled support sets, "
                    f"{steps} steps of FiT's tasks; clients scored with the pooled prototypes")
        return f"centralized (FiT's upper bound): {sent} trained on the pooled support sets, {steps} steps"

    def resolved(self) -> dict[str, Any]:
        from fedfit.centralized import UPLOAD_ENCODING, central_steps

        return {"central_steps_resolved": central_steps(self.cfg), "upload_encoding": UPLOAD_ENCODING}
