"""One client's side of a federated round, in plain PyTorch/numpy (the Flower layer wraps this).

The model state travels as ONE flat float32 vector in the order of ``Layout.of(model.state_arrays())``;
Flower adds framing per array, so one array keeps the wire within a few hundred bytes of the payload.

Methods (``cfg["method"]``) and what they train:
  * ``fit``: the adapter (``cfg["adapter"]``: FiT's FiLM by default; CaSE, MTL scale-and-shift, ICIIA)
    + the head's mixing weights, aggregated by the strategy.
  * ``head-only``: nothing in the body; only the head's mixing weights (none for ProtoNets).
  * ``local-only``: the adapter as in ``fit``, but every client keeps its own state (no aggregation).
  * ``full``: every backbone weight (BiT-style full fine-tuning), same head and episodes.

An adapter's personal state (UpperCaSE's linear head, ICIIA's history features) never leaves the
client: ``ClientWork`` loads it from the client's state store before each piece of work (or starts
it afresh for a client seen for the first time) and saves it after, so the model object that serves
many clients in one process carries nothing from one client to the next.

Per process, a small bounded cache keeps the built model (backbone load ~1 s), the decoded data set
(memory-mapped from fedfit's cache) and the partition plan (indices); a client's images are copied
out of the data set only while that client works (``client_data``).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from fedfit import seeding
from fedfit.client_state import EVALUATE, TRAIN, ClientStateStore, version
from fedfit.config import data_seed
from fedfit.data import ClientData, ClientPlan, ImageSet, kshot_plan, load_source, materialize
from fedfit.episodes import FineTuneConfig, evaluate, finetune
from fedfit.heads import ClassStats, auto_head
from fedfit.layout import Layout
from fedfit.model import FewShotModel, build_model

FIXED_ADAPTER = {"head-only": "none", "full": "full"}  # methods whose "adapter" is fixed
PERSONAL = "personal/"  # store key prefix of an adapter's personal state


def adapter_name(cfg: dict[str, Any]) -> str:
    """The adapter the method trains: ``cfg["adapter"]`` for fit / local-only."""
    return FIXED_ADAPTER.get(cfg["method"], cfg["adapter"])


def adapter_options(cfg: dict[str, Any]) -> dict[str, Any]:
    name = adapter_name(cfg)
    if name == "iciia":
        return {"partitions": cfg["iciia_partitions"]}
    if name == "case":
        return {"linear_steps": cfg["case_linear_steps"]}
    return {}


def history_per_class(cfg: dict[str, Any]) -> int:
    """Unlabelled history images per class of each client (``history``; -1: 5 for ICIIA, else 0)."""
    if cfg["history"] >= 0:
        return cfg["history"]
    return 5 if adapter_name(cfg) == "iciia" else 0

V = TypeVar("V")


class _Bounded:
    """A tiny LRU cache: at most ``size`` entries, the least recently used dropped first."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def get(self, key, make: Callable[[], V]) -> V:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value

    def clear(self) -> None:
        self.items.clear()


_MODELS = _Bounded(2)   # a model holds a backbone (~20 MB for Lite0, ~14 MB per extra copy of weights)
_SOURCES = _Bounded(2)  # data sets are memory-mapped: cheap to keep
_PLANS = _Bounded(4)    # indices only


def model_key(cfg: dict[str, Any]) -> tuple:
    return (cfg["backbone"], cfg["weights"], adapter_name(cfg), tuple(sorted(adapter_options(cfg).items())),
            cfg["head"], cfg["shots"], cfg["protonets_temperature"], cfg["device"], cfg["precision"])


def head_name(cfg: dict[str, Any]) -> str:
    return auto_head(cfg["shots"]) if cfg["head"] == "auto" else cfg["head"]


def shared_model(cfg: dict[str, Any]) -> FewShotModel:
    """The model for this config, built once per process and reused by every client it serves."""
    def make() -> FewShotModel:
        t = cfg["protonets_temperature"]
        head_options = {"temperature": t if t == "dim" else float(t)} if head_name(cfg) == "protonets" else None
        return build_model(cfg["backbone"], cfg["weights"], adapter_name(cfg), cfg["head"], min_shots=cfg["shots"],
                           device=cfg["device"], head_options=head_options, adapter_options=adapter_options(cfg),
                           precision=cfg["precision"])

    return _MODELS.get(model_key(cfg), make)


def initial_state(cfg: dict[str, Any]) -> tuple[Layout, np.ndarray]:
    """Layout and flat float32 initial state (FiLM identity, head defaults) of the configured model."""
    model = shared_model(cfg)
    model.reset()
    named = model.state_arrays()
    layout = Layout.of(named)
    return layout, layout.pack(named)


def source(cfg: dict[str, Any]) -> ImageSet:
    """The configured data set at the run's resolution (decoded once, then memory-mapped)."""
    key = (cfg["dataset"], cfg["data_root"], cfg["cache_dir"], cfg["image_size"])
    return _SOURCES.get(key, lambda: load_source(cfg["dataset"], image_size=cfg["image_size"],
                                                 root=cfg["data_root"] or None, cache_dir=cfg["cache_dir"] or None))


AUTO_NEW_USERS = 10  # new_users = -1: up to this many, as the leftover images allow


def plans(cfg: dict[str, Any]) -> list[ClientPlan]:
    """Every client's k-shot plan (indices): the ``num_clients`` training clients, then the new users
    (held out, evaluation only); the same in every process for the same options."""
    history = history_per_class(cfg)
    key = (cfg["dataset"], cfg["data_root"], cfg["cache_dir"], cfg["image_size"], cfg["num_clients"],
           cfg["new_users"], cfg["classes_per_client"], cfg["shots"], cfg["queries"], history, data_seed(cfg))
    auto = cfg["new_users"] < 0
    return _PLANS.get(key, lambda: kshot_plan(
        source(cfg), cfg["num_clients"], cfg["classes_per_client"], cfg["shots"], cfg["queries"], seed=data_seed(cfg),
        history=history, held_out=AUTO_NEW_USERS if auto else cfg["new_users"], held_out_upto=auto))


def num_partitions(cfg: dict[str, Any]) -> int:
    """Training clients + new users (the resolved number when ``new_users = -1``)."""
    return len(plans(cfg))


def client_data(cfg: dict[str, Any], partition_id: int) -> ClientData:
    """Client ``partition_id``'s images, copied out of the data set by its plan."""
    ps = plans(cfg)
    if not 0 <= partition_id < len(ps):
        raise ValueError(f"partition-id {partition_id} outside 0..{len(ps) - 1} ({cfg['num_clients']} clients + "
                         f"{len(ps) - cfg['num_clients']} new users)")
    return materialize(source(cfg), ps[partition_id])


def round_lr(cfg: dict[str, Any], server_round: int) -> float:
    return cfg["lr"] * cfg["lr_decay"] ** ((max(server_round, 1) - 1) // max(cfg["lr_decay_every"], 1))


class ClientWork:
    """What client ``partition_id`` does with a received state vector. ``store``: where its personal
    state lives between rounds (``fedfit.client_state``; None: nothing persists, each piece of work
    starts the personal state afresh). ``version``: of the work in progress (reads below it, writes it)."""

    def __init__(self, cfg: dict[str, Any], partition_id: int,
                 store: ClientStateStore | Callable[[], ClientStateStore] | None = None):
        self.cfg, self.pid, self.data = cfg, partition_id, client_data(cfg, partition_id)
        self.model = shared_model(cfg)
        self.layout = Layout.of(self.model.state_arrays())
        self._store = store  # a store, or a function that opens it when first needed

    @property
    def store(self) -> ClientStateStore | None:
        if callable(self._store) and not isinstance(self._store, ClientStateStore):
            self._store = self._store()
        return self._store

    @property
    def fingerprint(self) -> int:
        """This client's state layout fingerprint (the server refuses replies with another one)."""
        return self.layout.fingerprint

    def load(self, flat: np.ndarray) -> None:
        if flat.shape != (self.layout.size,):
            raise ValueError(f"state has {flat.size} values, this model needs {self.layout.size}")
        self.model.load_state_arrays(self.layout.unpack(flat, copy=True))

    def state(self) -> np.ndarray:
        return self.layout.pack(self.model.state_arrays())

    @contextmanager
    def personal(self, version: int, save: bool = True):
        """This client's personal state in the shared model for the work of ``version``: loaded (or
        started afresh: ICIIA's history features from its history images) before, saved after."""
        m = self.model
        if not m.adapter.has_personal_state:  # FiLM & co.: nothing to load or save
            yield
            return
        m.reset_personal()
        own = self.store.get_all(self.pid, PERSONAL, version) if self.store is not None else {}
        if own:
            m.load_personal_state_arrays({k[len(PERSONAL):]: v for k, v in own.items()})
        elif m.adapter.uses_history:
            m.set_history(self.data.history_x)
        try:
            yield
            if save and self.store is not None:
                mine = m.personal_state_arrays()
                if mine:
                    self.store.put_many(self.pid, {PERSONAL + k: v for k, v in mine.items()}, version)
        finally:
            m.reset_personal()  # nothing of this client stays in the shared model

    def train(self, flat: np.ndarray, server_round: int, steps: int | None = None,
              prox_mu: float = 0.0) -> tuple[np.ndarray, dict[str, float]]:
        """Local episodic steps from ``flat``; returns the new flat state and metrics
        (train_loss nats, train_seconds, train_images, update_norm, num-examples = support images)."""
        with self.personal(version(server_round, TRAIN)):
            return self._train(flat, server_round, steps, prox_mu)

    def _train(self, flat, server_round, steps, prox_mu):
        cfg = self.cfg
        self.load(flat)
        ref = [p.detach().clone() for p in self.model.trainable_parameters()] if prox_mu > 0 else None
        ft = FineTuneConfig(steps=cfg["local_steps"] if steps is None else steps, lr=round_lr(cfg, server_round),
                            weight_decay=cfg["weight_decay"], min_way=cfg["min_way"], max_way=cfg["max_way"] or None,
                            seed=seeding.derive(cfg["seed"], "train", server_round, self.pid), prox_mu=prox_mu,
                            prox_ref=ref)
        res = finetune(self.model, self.data.support_x, self.data.support_y, ft)
        new = self.state()
        metrics = {"num-examples": int(self.data.num_examples), "train_seconds": res.seconds,
                   "train_images": int(res.images), "train_steps": int(res.steps),
                   "update_norm": float(np.linalg.norm(new.astype(np.float64) - flat))}
        if res.losses:
            metrics["train_loss"] = float(res.mean_loss)
        return new, metrics

    def evaluate(self, flat: np.ndarray, server_round: int = 0, personalize_steps: int = 0,
                 class_stats: bool = False) -> tuple[dict[str, float], tuple | None]:
        """Personalized accuracy: head from this client's support set under ``flat``, on its query set
        (+ the adapter's own heads: ``accuracy_linear``...); with ``personalize_steps`` > 0 also after
        that many local steps (state restored afterwards). With ``class_stats`` also (class ids, counts,
        feature sums) of the support set, from the same embedding pass."""
        t0 = time.perf_counter()
        with self.personal(version(server_round, EVALUATE)):
            self.load(flat)
            d = self.data
            r = evaluate(self.model, d.support_x, d.support_y, d.query_x, d.query_y,
                         seed=seeding.derive(self.cfg["seed"], "evaluate", server_round, self.pid), features=True)
            out = {"accuracy": r.accuracy, "eval_loss": r.loss, "num-examples": r.num_query, **r.extra}
            stats = None
            if class_stats:
                st = ClassStats.of(r.support_features, torch.as_tensor(d.support_y, device=r.support_features.device),
                                   d.num_classes)
                stats = (d.classes.astype(np.int64), st.count.cpu().numpy(),
                         st.total.cpu().numpy().astype(np.float32))
            self._query_cache = (flat.tobytes().__hash__(), server_round, r.query_features)
        if personalize_steps > 0:
            with self.personal(version(server_round, EVALUATE), save=False):
                self._train(flat, server_round=1, steps=personalize_steps, prox_mu=0.0)
                r2 = evaluate(self.model, d.support_x, d.support_y, d.query_x, d.query_y)
                out["accuracy_finetuned"] = r2.accuracy
            self.load(flat)
        out["eval_seconds"] = time.perf_counter() - t0
        return out, stats

    @torch.no_grad()
    def class_sums(self, flat: np.ndarray, server_round: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(global class ids (C,), counts (C,), feature sums (C, d) float32) of the support set."""
        return self.evaluate(flat, server_round, class_stats=True)[1]

    @torch.no_grad()
    def global_correct(self, flat: np.ndarray, class_ids: np.ndarray, means: np.ndarray,
                       server_round: int = 0) -> tuple[int, int]:
        """Query images classified correctly among ALL classes by nearest global class mean
        (means (K, d) of classes ``class_ids`` aggregated from every client). Reuses the query
        features of this round's evaluation when this process computed them."""
        cached = getattr(self, "_query_cache", None)
        if cached is not None and cached[0] == flat.tobytes().__hash__() and cached[1] == server_round:
            q = cached[2]
        else:
            with self.personal(version(server_round, EVALUATE), save=False):
                self.load(flat)
                with self.model.task(self.data.support_x):
                    q = self.model.embed_images(self.data.query_x)
        mu = torch.as_tensor(means, device=q.device, dtype=q.dtype)
        pred = class_ids[torch.cdist(q, mu).argmin(1).cpu().numpy()]
        truth = self.data.classes[self.data.query_y]
        return int((pred == truth).sum()), int(len(truth))
