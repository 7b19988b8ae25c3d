"""What a method is: one small protocol between the round loop and a way of learning (in the spirit of
pfl-research's ``FederatedAlgorithm``), in partition ids, flat float32 states and metrics dicts.

The loop (``strategies.loop``) runs any method; per round it asks the method

* who trains: ``on_server`` (the server trains, over data it pooled: ``train_on_server``) or the
  clients: ``cohort()`` partitions sampled among the online training clients, every ``training_rounds()``;
* from what: ``shared`` (one global state that training and evaluation messages carry) or each client's
  own state (kept on the client; messages then carry no state, are the simulator's control messages
  and not traffic, and there is no global head);
* what it does with the replies: ``aggregate(round, state, replies, stock)`` returns the new global state
  (``stock``: the configured Flower strategy over some replies) or None to keep it;
* what it reports: ``extra(round)`` for the round's record, ``rescore(head, queries)`` personalized
  accuracies that replace the clients' own (FiT's oracle: the pooled prototypes');
* whether a round's evaluation may go out with the next round's training (``overlap``);
* what it checkpoints: ``state()`` / ``load_state()`` (``fedfit.saveable``).

Option rules of the method live with it (``problem``), as do its first line (``describe``) and what
its options resolve to (``resolved``, for config.json).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from fedfit.config import ROUND_STEPS
from fedfit.registry import METHODS  # the methods register there (option resolution below looks them up)


@dataclass
class Reply:
    """One training client's reply: its partition id, its metrics and (``state``) the float32 (n,) state
    it sent, decoded when first read (None when it sent none)."""

    partition: int
    metrics: dict[str, Any]
    load: Callable[[], np.ndarray | None] = field(default=lambda: None, repr=False)

    @property
    def state(self) -> np.ndarray | None:
        return self.load()


@dataclass
class ServerStep:
    """A round trained on the server: the new float32 (n,) ``state``, the ``clients`` whose data it used,
    its mean ``loss`` (None: no step), ``upload``: bytes the clients sent to make it possible this round
    (pooled data: training upload)."""

    state: np.ndarray
    clients: int
    loss: float | None = None
    upload: int = 0


Stock = Callable[[Sequence[Reply]], "np.ndarray | None"]  # the configured strategy over these replies


class Method:
    """A federated method over the options ``cfg``; subclasses set the class attributes and override
    the hooks that differ (the defaults are FedAvg-style federated fine-tuning of the adapter)."""

    name = ""
    adapter: str | None = None   # the adapter it trains; None: the ``adapter`` option
    shared = True                # one global state that clients start from and are evaluated with
    on_server = False            # the server trains (no client trains, no simulated devices)
    overlap = True               # a round's evaluation may go out with the next round's training
    local_steps = ROUND_STEPS    # episodic steps per client per round when ``local_steps = -1``
    aggregates = True            # a round aggregates client updates (over-selection and DP act on that)

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg

    @classmethod
    def problem(cls, cfg: dict[str, Any]) -> str | None:
        """What to change (one line) when the options cannot run this method, else None."""
        if not cls.aggregates and cfg["over_select"] != 0:
            return f"over_select keeps the first replies of a federated round; method = {cls.name} has none"
        if not cls.aggregates and cfg["dp"] != "none":
            return f"dp needs an aggregated method: {cls.name} aggregates no client updates"
        if cls.adapter is not None and cfg["adapter"] != "film":  # film: the option's default
            free = [n for n in METHODS.names() if METHODS.get(n).adapter is None]
            return (f"method = {cls.name} fixes what is trained: adapter = {cfg['adapter']} needs method = "
                    f"{', '.join(free)}")
        return None

    # --- who trains ---------------------------------------------------------------------------
    def training_rounds(self) -> int:
        """Rounds the run has after round 0 (``rounds``; a method that trains once: 1)."""
        return int(self.cfg["rounds"])

    def cohort(self) -> int:
        """Training partitions sampled per round (``over_select`` more are asked)."""
        return int(self.cfg["clients_per_round"])

    def train_on_server(self, server_round: int, state: np.ndarray) -> ServerStep:
        """``on_server`` methods: round ``server_round``'s training from the global float32 (n,) ``state``."""
        raise NotImplementedError(f"method {self.name} trains on its clients")

    # --- what it does with the replies ------------------------------------------------------------
    def aggregate(self, server_round: int, state: np.ndarray, replies: Sequence[Reply],
                  stock: Stock) -> np.ndarray | None:
        """The new global state from the round's kept ``replies`` (sorted by partition), or None to keep
        ``state``; ``stock(replies)`` runs the configured strategy (with DP, when on) over replies."""
        return stock(replies)

    # --- what it reports ----------------------------------------------------------------------------
    def extra(self, server_round: int) -> dict[str, Any]:
        """What round ``server_round``'s record keeps under ``extra``."""
        return {}

    def rescore(self, head: Any, queries: list[tuple[int, dict[str, np.ndarray]]]) -> dict[int, float] | None:
        """Personalized accuracies (partition -> fraction) that replace the clients' own, from the global
        ``head`` (``fedfit.global_head.GlobalHead``) and the evaluated training clients' (partition, {"query_features"
        (m, d), "query_labels" (m,), "class_ids" (C,), ...}); None: keep theirs."""
        return None

    def describe(self, size: int) -> str:
        """What the run trains and sends, for its first line (``size``: shared parameters)."""
        from fedfit.config import local_steps
        from fedfit.format import human_bytes

        cfg = self.cfg
        dp = '' if cfg['dp'] == 'none' else ' + DP (' + cfg['dp'] + ' clipping)'
        return (f"{cfg['method']} / {cfg['strategy']}{dp}, {size:,} parameters sent ({human_bytes(4 * size)} fp32), "
                f"{self.cohort()} clients per round, {local_steps(cfg)} steps each")

    def resolved(self) -> dict[str, Any]:
        """What the method's own options resolve to (config.json)."""
        return {}

    # --- what it checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def method_of(cfg: dict[str, Any]) -> Method:
    """The method ``cfg['method']`` over ``cfg`` (RegistryError naming the choices when unknown)."""
    return METHODS.get(cfg["method"])(cfg)
