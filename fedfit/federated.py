"""One client's side of a federated round, in plain PyTorch/numpy (the Flower layer wraps this).

The model state travels as ONE flat float32 vector in the order of ``Layout.of(model.state_arrays())``;
Flower adds framing per array, so one array keeps the wire within a few hundred bytes of the payload.

Methods (``cfg["method"]``) and what they train:
  * ``fit``: FiLM + the head's mixing weights, aggregated by the strategy (FiT).
  * ``head-only``: nothing in the body; only the head's mixing weights (none for ProtoNets).
  * ``local-only``: FiLM as in ``fit``, but every client keeps its own state (no aggregation).
  * ``full``: every backbone weight (BiT-style full fine-tuning), same head and episodes.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fedfit.codec import Layout
from fedfit.data import ClientData, load_source, partition_kshot
from fedfit.episodes import FineTuneConfig, evaluate, finetune
from fedfit.heads import ClassStats
from fedfit.model import FewShotModel, build_model

METHOD_ADAPTER = {"fit": "film", "head-only": "none", "local-only": "film", "full": "full"}

_MODELS: dict[tuple, FewShotModel] = {}
_PARTITIONS: dict[tuple, list[ClientData]] = {}


def model_key(cfg: dict[str, Any]) -> tuple:
    return (cfg["backbone"], cfg["weights"], METHOD_ADAPTER[cfg["method"]], cfg["head"], cfg["shots"],
            cfg["protonets_temperature"], cfg["device"])


def shared_model(cfg: dict[str, Any]) -> FewShotModel:
    """The model for this config, built once per process (backbone load ~1 s) and reused."""
    key = model_key(cfg)
    if key not in _MODELS:
        t = cfg["protonets_temperature"]
        head_options = {"temperature": t if t == "dim" else float(t)} if _head_name(cfg) == "protonets" else None
        _MODELS[key] = build_model(cfg["backbone"], cfg["weights"], METHOD_ADAPTER[cfg["method"]], cfg["head"],
                                   min_shots=cfg["shots"], device=cfg["device"], head_options=head_options)
    return _MODELS[key]


def _head_name(cfg: dict[str, Any]) -> str:
    from fedfit.heads import auto_head

    return auto_head(cfg["shots"]) if cfg["head"] == "auto" else cfg["head"]


def initial_state(cfg: dict[str, Any]) -> tuple[Layout, np.ndarray]:
    """Layout and flat float32 initial state (FiLM identity, head defaults) of the configured model."""
    model = shared_model(cfg)
    model.reset()
    named = model.state_arrays()
    layout = Layout.of(named)
    return layout, layout.pack(named)


def partitions(cfg: dict[str, Any]) -> list[ClientData]:
    """Every client's k-shot data, computed deterministically (same in every process) and cached."""
    key = (cfg["dataset"], cfg["data_root"], cfg["cache_dir"], cfg["image_size"], cfg["num_clients"],
           cfg["classes_per_client"], cfg["shots"], cfg["queries"], cfg["seed"])
    if key not in _PARTITIONS:
        data = load_source(cfg["dataset"], image_size=cfg["image_size"], root=cfg["data_root"] or None,
                           cache_dir=cfg["cache_dir"] or None)
        _PARTITIONS[key] = partition_kshot(data, cfg["num_clients"], cfg["classes_per_client"], cfg["shots"],
                                           cfg["queries"], seed=cfg["seed"])
    return _PARTITIONS[key]


def round_lr(cfg: dict[str, Any], server_round: int) -> float:
    return cfg["lr"] * cfg["lr_decay"] ** ((max(server_round, 1) - 1) // max(cfg["lr_decay_every"], 1))


class ClientWork:
    """What client ``partition_id`` does with a received state vector."""

    def __init__(self, cfg: dict[str, Any], partition_id: int):
        parts = partitions(cfg)
        if not 0 <= partition_id < len(parts):
            raise ValueError(f"partition-id {partition_id} outside 0..{len(parts) - 1} (num_clients = {len(parts)})")
        self.cfg, self.pid, self.data = cfg, partition_id, parts[partition_id]
        self.model = shared_model(cfg)
        self.layout = Layout.of(self.model.state_arrays())

    def load(self, flat: np.ndarray) -> None:
        if flat.shape != (self.layout.size,):
            raise ValueError(f"state has {flat.size} values, this model needs {self.layout.size}")
        self.model.load_state_arrays(self.layout.unpack(flat, copy=True))

    def state(self) -> np.ndarray:
        return self.layout.pack(self.model.state_arrays())

    def train(self, flat: np.ndarray, server_round: int, steps: int | None = None,
              prox_mu: float = 0.0) -> tuple[np.ndarray, dict[str, float]]:
        """Local episodic steps from ``flat``; returns the new flat state and metrics
        (train_loss nats, train_seconds, train_images, num-examples = support images)."""
        cfg = self.cfg
        self.load(flat)
        ref = [p.detach().clone() for p in self.model.trainable_parameters()] if prox_mu > 0 else None
        ft = FineTuneConfig(steps=cfg["local_steps"] if steps is None else steps, lr=round_lr(cfg, server_round),
                            weight_decay=cfg["weight_decay"], min_way=cfg["min_way"], max_way=cfg["max_way"] or None,
                            seed=hash((cfg["seed"], server_round, self.pid)) % 2**32, prox_mu=prox_mu, prox_ref=ref)
        res = finetune(self.model, self.data.support_x, self.data.support_y, ft)
        metrics = {"num-examples": int(self.data.num_examples), "train_seconds": res.seconds,
                   "train_images": int(res.images), "train_steps": int(res.steps)}
        if res.losses:
            metrics["train_loss"] = float(res.mean_loss)
        return self.state(), metrics

    def evaluate(self, flat: np.ndarray, personalize_steps: int = 0) -> dict[str, float]:
        """Personalized accuracy: head from this client's support set under ``flat``, on its query set;
        with ``personalize_steps`` > 0 also after that many local steps (state restored afterwards)."""
        t0 = time.perf_counter()
        self.load(flat)
        d = self.data
        r = evaluate(self.model, d.support_x, d.support_y, d.query_x, d.query_y)
        out = {"accuracy": r.accuracy, "eval_loss": r.loss, "num-examples": r.num_query}
        if personalize_steps > 0:
            self.train(flat, server_round=1, steps=personalize_steps)
            r2 = evaluate(self.model, d.support_x, d.support_y, d.query_x, d.query_y)
            out["accuracy_finetuned"] = r2.accuracy
            self.load(flat)
        out["eval_seconds"] = time.perf_counter() - t0
        return out

    @torch.no_grad()
    def class_sums(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(global class ids (C,), counts (C,), feature sums (C, d) float32) of the support set."""
        self.load(flat)
        f = self.model.embed_images(self.data.support_x)
        st = ClassStats.of(f, torch.as_tensor(self.data.support_y, device=f.device), self.data.num_classes)
        return self.data.classes.astype(np.int64), st.count.cpu().numpy(), st.total.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def global_correct(self, flat: np.ndarray, class_ids: np.ndarray, means: np.ndarray) -> tuple[int, int]:
        """Query images classified correctly among ALL classes by nearest global class mean
        (means (K, d) of classes ``class_ids`` aggregated from every client)."""
        self.load(flat)
        q = self.model.embed_images(self.data.query_x)
        mu = torch.as_tensor(means, device=q.device, dtype=q.dtype)
        pred = class_ids[torch.cdist(q, mu).argmin(1).cpu().numpy()]
        truth = self.data.classes[self.data.query_y]
        return int((pred == truth).sum()), int(len(truth))
