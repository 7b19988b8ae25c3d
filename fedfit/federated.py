"""One client's side of a federated round, in plain PyTorch/numpy (the Flower layer wraps this).

The model state travels as ONE flat float32 vector in the order of ``Layout.of(model.state_arrays())``;
Flower adds framing per array, so one array keeps the wire within a few hundred bytes of the payload.

The adapter a client trains is the ``adapter`` option, or the one its method fixes (``fedfit.methods``:
``head-only`` trains none, ``full`` every backbone weight); the head's mixing weights train with it.

Queries (``query_split``) come from the source's test split where it has one, else from training
images no client trains on (``fedfit.data.partition``); support and history images always come from
the training split.

An adapter's personal state (ICIIA's history features) never leaves the client: ``ClientWork``
loads it from the client's state store before each piece of work (or starts it afresh for a client
seen for the first time) and saves it after, so the model object that serves many clients in one
process carries nothing from one client to the next.

Per process, a small bounded cache keeps the built model (backbone load ~1 s), the decoded data set
(memory-mapped from fedfit's cache) and the partition plan (indices); a client's images are copied
out of the data set only while that client works (``client_data``).
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from fedfit import seeding
from fedfit.client_state import EVALUATE, TRAIN, ClientStateStore, version
from fedfit.config import FEDAVG_SPLIT, data_seed, fedavg_split, local_steps
from fedfit.data import (ClientData, ClientPlan, DataError, ImageSet, dirichlet_plan, has_test_split, kshot_plan,
                         load_source, materialize, natural_plan)
from fedfit.episodes import FineTuneConfig, evaluate, finetune
from fedfit.global_head import client_statistics, needs_scatter
from fedfit.heads import TEMPERATURES, auto_head
from fedfit.layout import Layout
from fedfit.model import FewShotModel, build_model
from fedfit.registry import METHODS

PERSONAL = "personal/"  # store key prefix of an adapter's personal state


def adapter_name(cfg: dict[str, Any]) -> str:
    """The adapter the method trains: the one it fixes (``Method.adapter``), else ``cfg["adapter"]``."""
    return METHODS.get(cfg["method"]).adapter or cfg["adapter"]


def adapter_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The adapter's keyword options from the run options it declares (``Adapter.config_options``)."""
    from fedfit.adapters import ADAPTERS

    return {kw: cfg[option] for kw, option in ADAPTERS.get(adapter_name(cfg)).config_options.items()}


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
    return (cfg["backbone"], cfg["backbone_weights"], adapter_name(cfg), tuple(sorted(adapter_options(cfg).items())),
            cfg["head"], cfg["shots"], cfg["protonets_temperature"], cfg["feature_norm"], cfg["device"], cfg["precision"])


def temperature(option: str) -> float | str:
    """``protonets_temperature`` as the head takes it: a named one (``heads.TEMPERATURES``) or a number."""
    return option if option in TEMPERATURES else float(option)


def head_name(cfg: dict[str, Any]) -> str:
    return auto_head(cfg["shots"]) if cfg["head"] == "auto" else cfg["head"]


def shared_model(cfg: dict[str, Any]) -> FewShotModel:
    """The model for this config, built once per process and reused by every client it serves."""
    def make() -> FewShotModel:
        t = cfg["protonets_temperature"]
        head_options = {"temperature": temperature(t)} if head_name(cfg) == "protonets" else None
        return build_model(cfg["backbone"], cfg["backbone_weights"], adapter_name(cfg), cfg["head"], min_shots=cfg["shots"],
                           device=cfg["device"], head_options=head_options, adapter_options=adapter_options(cfg),
                           precision=cfg["precision"], feature_norm=cfg["feature_norm"])

    return _MODELS.get(model_key(cfg), make)


def initial_state(cfg: dict[str, Any]) -> tuple[Layout, np.ndarray]:
    """Layout and flat float32 initial state (FiLM identity, head defaults) of the configured model."""
    model = shared_model(cfg)
    model.reset()
    named = model.state_arrays()
    layout = Layout.of(named)
    return layout, layout.pack(named)


def query_split(cfg: dict[str, Any]) -> str:
    """Where queries come from: ``"test"`` (the source's test split) or ``"train"`` (training images no
    client trains on)."""
    return "test" if cfg["query_split"] != "train" and has_test_split(cfg["dataset"]) else "train"


def _load(cfg: dict[str, Any], split: str | None) -> ImageSet:
    key = (cfg["dataset"], cfg["data_root"], cfg["cache_dir"], cfg["image_size"], split)
    options = {} if split is None else {"split": split}
    return _SOURCES.get(key, lambda: load_source(cfg["dataset"], image_size=cfg["image_size"],
                                                 root=cfg["data_root"] or None, cache_dir=cfg["cache_dir"] or None,
                                                 **options))


def source(cfg: dict[str, Any]) -> ImageSet:
    """The configured data set's training images at the run's resolution (decoded once, then
    memory-mapped): its train split where it has splits."""
    return _load(cfg, "train" if has_test_split(cfg["dataset"]) else None)


def query_source(cfg: dict[str, Any]) -> ImageSet | None:
    """The test split queries are drawn from, or None when they come from the training images."""
    return _load(cfg, "test") if query_split(cfg) == "test" else None


def splits(cfg: dict[str, Any]) -> dict[str, str]:
    """Which images every number comes from (written to config.json)."""
    name = cfg["dataset"]
    if query_split(cfg) == "test":
        q = (f"{name} test split: never trained on; "
             + ("every test image of each of the client's classes" if cfg["queries"] == -1 else
                f"{cfg['queries']} per class per client, distinct within a client, drawn independently per client"))
    elif cfg["queries"] == -1:
        q = (f"{name} images that no client holds (in no client's support or history set): every one of each of "
             f"the client's classes, shared by the clients of a class")
    else:
        q = f"{name} training images that no client trains on (each image in at most one client's sets)"
    train = f"{name} {'train split' if has_test_split(name) else 'images'}"
    return {"support": train, "history": train, "queries": q, "personalized_accuracy": "queries",
            "new_users": "support from images no training client holds; queries as above",
            "global_accuracy": "the evaluated training clients' queries (each image once), scored by one head "
                               "over every class any training client holds"}


AUTO_NEW_USERS = 10  # new_users = -1: up to this many, as the leftover images allow


def plans(cfg: dict[str, Any]) -> list[ClientPlan]:
    """Every client's k-shot plan (indices): the ``num_clients`` training clients, then the new users
    (held out, evaluation only); the same in every process for the same options."""
    history = history_per_class(cfg)
    key = (cfg["dataset"], cfg["data_root"], cfg["cache_dir"], cfg["image_size"], cfg["num_clients"],
           cfg["new_users"], cfg["classes_per_client"], cfg["shots"], cfg["queries"], history, data_seed(cfg),
           query_split(cfg), cfg["partition"], cfg["dirichlet_alpha"], cfg["quantity_skew"])
    auto = cfg["new_users"] < 0
    held_out = AUTO_NEW_USERS if auto else cfg["new_users"]
    if cfg["partition"] == "dirichlet":
        return _PLANS.get(key, lambda: dirichlet_plan(
            source(cfg), cfg["num_clients"], float(cfg["dirichlet_alpha"]), cfg["classes_per_client"] * cfg["shots"],
            cfg["queries"], seed=data_seed(cfg), quantity_skew=float(cfg["quantity_skew"]), held_out=held_out,
            held_out_upto=auto, query_data=query_source(cfg)))
    if cfg["partition"] == "natural":
        return _PLANS.get(key, lambda: _owners(cfg, held_out, auto))
    return _PLANS.get(key, lambda: kshot_plan(
        source(cfg), cfg["num_clients"], cfg["classes_per_client"], cfg["shots"], cfg["queries"], seed=data_seed(cfg),
        history=history, held_out=held_out, held_out_upto=auto, query_data=query_source(cfg)))


def _owners(cfg: dict[str, Any], held_out: int, upto: bool) -> list[ClientPlan]:
    """partition = natural: the image folder's owners in name order, renumbered 0.. (partition ids): the
    first ``num_clients`` train, the next ``held_out`` are new users."""
    from dataclasses import replace

    data = source(cfg)
    owned = natural_plan(data, cfg["shots"], cfg["queries"], seed=data_seed(cfg))
    n = cfg["num_clients"]
    if len(owned) < n + (0 if upto else held_out):
        raise DataError(f"{data.name}: {len(owned)} owners have >= 2 classes of >= shots + 1 = {cfg['shots'] + 1} "
                        f"images; partition = natural needs num_clients ({n}) + new_users "
                        f"({held_out if not upto else 0}) of them: lower num_clients or new_users, or shots")
    return [replace(p, client_id=i) for i, p in enumerate(owned[:n + held_out])]


def num_partitions(cfg: dict[str, Any]) -> int:
    """Training clients + new users (the resolved number when ``new_users = -1``)."""
    return len(plans(cfg))


def client_data(cfg: dict[str, Any], partition_id: int) -> ClientData:
    """Client ``partition_id``'s images, copied out of the data set by its plan."""
    ps = plans(cfg)
    if not 0 <= partition_id < len(ps):
        raise ValueError(f"partition-id {partition_id} outside 0..{len(ps) - 1} ({cfg['num_clients']} clients + "
                         f"{len(ps) - cfg['num_clients']} new users)")
    return materialize(source(cfg), ps[partition_id], query_source(cfg))


def round_lr(cfg: dict[str, Any], server_round: int) -> float:
    """The clients' learning rate in round ``server_round`` (1..rounds): ``lr_schedule = step``: ``lr`` x
    ``lr_decay`` every ``lr_decay_every`` rounds (FiT's x 0.3 every 20 on CIFAR-100); ``cosine``: from
    ``lr`` in round 1 down along half a cosine, lr x (1 + cos(pi (r - 1) / rounds)) / 2."""
    r = max(server_round, 1)
    if cfg["lr_schedule"] == "cosine":
        return cfg["lr"] * 0.5 * (1.0 + math.cos(math.pi * (r - 1) / max(cfg["rounds"], 1)))
    return cfg["lr"] * cfg["lr_decay"] ** ((r - 1) // max(cfg["lr_decay_every"], 1))


def client_lr(cfg: dict[str, Any], server_round: int) -> float:
    """The lr of a client's training in round ``server_round``: ``round_lr``, over ``FEDAVG_SPLIT`` under
    FedAvg's default step (``fedavg_split``)."""
    return round_lr(cfg, server_round) / (FEDAVG_SPLIT if fedavg_split(cfg) else 1.0)


def finetune_config(cfg: dict[str, Any], server_round: int, steps: int, seed: int, lr: float | None = None,
                    **extra) -> FineTuneConfig:
    """The episodic fine-tuning of round ``server_round`` as the options define it (``lr``: instead of
    ``round_lr``)."""
    return FineTuneConfig(steps=steps, lr=round_lr(cfg, server_round) if lr is None else lr,
                          weight_decay=cfg["weight_decay"],
                          min_way=cfg["min_way"], max_way=cfg["max_way"] or None, seed=seed,
                          split=cfg["episode_split"],
                          objective="uppercase" if cfg["case_training"] == "uppercase" else "head",
                          linear_steps=cfg["case_linear_steps"], accumulate=cfg["accumulate_tasks"], **extra)


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
        ft = finetune_config(cfg, server_round, steps=local_steps(cfg) if steps is None else steps,
                             lr=client_lr(cfg, server_round), seed=seeding.derive(cfg["seed"], "train", server_round, self.pid), prox_mu=prox_mu,
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
                 class_stats: bool = False) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
        """Personalized accuracy: head from this client's support set under ``flat``, on its query set
        (+ the adapter's own heads: ``accuracy_linear``...); with ``personalize_steps`` > 0 also after
        that many local steps (state restored afterwards). With ``class_stats`` also what the global head
        needs, from the same embedding pass: the support set's class statistics
        (``global_head.client_statistics``) and the query features with their global labels and ids."""
        t0 = time.perf_counter()
        with self.personal(version(server_round, EVALUATE)):
            self.load(flat)
            d = self.data
            r = evaluate(self.model, d.support_x, d.support_y, d.query_x, d.query_y,
                         seed=seeding.derive(self.cfg["seed"], "evaluate", server_round, self.pid), features=True)
            out = {"accuracy": r.accuracy, "eval_loss": r.loss, "num-examples": r.num_query, **r.extra}
            if r.query_norm is not None:
                out["query_norm"] = r.query_norm
            stats = None
            if class_stats:
                stats = self._statistics(r.support_features)
                stats.update(query_features=r.query_features.float().cpu().numpy(),
                             query_labels=d.classes[d.query_y].astype(np.int64), query_ids=d.query_ids.astype(np.int64))
        if personalize_steps > 0:
            with self.personal(version(server_round, EVALUATE), save=False):
                self._train(flat, server_round=1, steps=personalize_steps, prox_mu=0.0)
                r2 = evaluate(self.model, d.support_x, d.support_y, d.query_x, d.query_y)
                out["accuracy_finetuned"] = r2.accuracy
            self.load(flat)
        out["eval_seconds"] = time.perf_counter() - t0
        return out, stats

    def _statistics(self, support_features: torch.Tensor) -> dict[str, np.ndarray]:
        return client_statistics(support_features, self.data.support_y, self.data.classes,
                                 scatter=needs_scatter(head_name(self.cfg)))

    @torch.no_grad()
    def statistics(self, flat: np.ndarray, server_round: int = 0) -> dict[str, np.ndarray]:
        """The support set's class statistics under ``flat`` (``global_head.client_statistics``), for a
        training client that is not evaluated this round."""
        with self.personal(version(server_round, EVALUATE), save=False):
            self.load(flat)
            with self.model.task(self.data.support_x) as s:
                s = self.model.embed_images(self.data.support_x) if s is None else s
            return self._statistics(s)
