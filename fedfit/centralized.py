"""FiT's upper bound (``method = centralized``): the adapter trained on everyone's data, pooled.

``CentralTrainer(cfg)`` pools the support images of every training client with their global class
labels (what a central server would have collected; new users' images stay out) and trains the
configured adapter and head with FiT's episodic steps over the pool. Each step is a client-sized task
(``episodes.PooledEpisodes``: ``way`` classes of the pool - between min(min_way, K) and max_way, or
classes_per_client when max_way = 0 - with ``shots`` random images of each, split about 50/50), so a
step costs what one client's step costs, and the default budget (``central_steps = -1``) is the
federation's own: rounds x clients_per_round x local_steps steps. Round r runs ``steps_in_round`` of
them from the current global state with a fresh Adam (as every client starts its round), seeded by
(seed, "centralized", r), so a resumed run trains exactly as an uninterrupted one. With
``central_tasks = "client"`` each step is instead one random client's own task (``episodes.ClientTasks``:
what that client's fine-tuning would draw), an ablation: the pooled data without tasks mixing clients.

``central_tasks = "fit"`` is FiT's own oracle (``run_fed_avg.py``): trained once (one round) for
``central_steps`` (-1: FiT's 400) at the federated lr without weight decay, each step one task of FiT's
``TaskResampler`` over the pool split once (``episodes.FitTasks``: 5 up to all pooled classes, up to 200
context images and 2,000 target images), and each client's personalized accuracy taken with the POOLED
prototypes (statistics) of its own classes (``pooled_personal``), not with its own few shots.

What pooling costs on a network (``upload_bytes``): every training client's support images uploaded
once, as PNG files (lossless; 8-bit grayscale when the image is gray, RGB otherwise) at the run's
working resolution - the images the training uses, not the larger originals.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np

from fedfit import seeding
from fedfit.config import FIT_LOCAL_STEPS, local_steps, training_rounds
from fedfit.episodes import PREPROCESS_ALL_MAX, ClientTasks, FitTasks, PooledEpisodes, finetune
from fedfit.layout import Layout

UPLOAD_ENCODING = "PNG (lossless; grayscale for gray images) at the working resolution"


def fit_oracle(cfg: dict[str, Any]) -> bool:
    """Whether the run is FiT's own oracle (``central_tasks = fit``)."""
    return cfg["central_tasks"] == "fit"


def central_steps(cfg: dict[str, Any]) -> int:
    """Pooled steps in all (``central_steps``; -1: rounds x clients_per_round x local steps, the federation's
    budget; FiT's oracle: its 400)."""
    if cfg["central_steps"] >= 0:
        return cfg["central_steps"]
    if fit_oracle(cfg):
        return FIT_LOCAL_STEPS
    return cfg["rounds"] * cfg["clients_per_round"] * local_steps(cfg)


def steps_in_round(total: int, rounds: int, server_round: int) -> int:
    """Round ``server_round``'s share (1..rounds) of ``total`` steps, spread as evenly as integers allow."""
    if rounds <= 0 or not 1 <= server_round <= rounds:
        return 0
    return total * server_round // rounds - total * (server_round - 1) // rounds


class _Pooled:
    """Images ``images[index[i]]`` without copying the pool: ``len`` and fancy indexing (uint8 (n, S, S, 3))."""

    def __init__(self, images: np.ndarray, index: np.ndarray):
        self.images, self.index = images, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx) -> np.ndarray:
        return np.asarray(self.images[self.index[idx]])


def owners(cfg: dict[str, Any]) -> np.ndarray:
    """The training client (partition id) of each pooled image (N,), in ``pool``'s order."""
    from fedfit.federated import plans

    return np.concatenate([np.full(len(p.support_idx), i) for i, p in enumerate(plans(cfg)[:cfg["num_clients"]])])


def pool(cfg: dict[str, Any]) -> tuple[np.ndarray | _Pooled, np.ndarray]:
    """Every training client's support images (uint8 (N, S, S, 3), or a lazy view of a large pool) and
    their global class labels (N,)."""
    from fedfit.federated import plans, source

    ps = plans(cfg)[:cfg["num_clients"]]
    index = np.concatenate([p.support_idx for p in ps])
    labels = np.concatenate([p.classes[p.support_y] for p in ps]).astype(np.int64)
    images = source(cfg).images
    view = _Pooled(images, index)
    return (view[np.arange(len(index))] if len(index) <= PREPROCESS_ALL_MAX else view), labels


def upload_bytes(images: np.ndarray | _Pooled) -> int:
    """Bytes of the PNG files of ``images`` (see ``UPLOAD_ENCODING``)."""
    from PIL import Image

    total = 0
    for i in range(len(images)):
        img = np.asarray(images[np.array([i])][0])
        gray = bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if gray else img, mode="L" if gray else "RGB").save(buf, format="PNG")
        total += buf.tell()
    return total


class CentralTrainer:
    """Trains the shared model of ``cfg`` on the pool; ``train(flat, r)`` -> (new flat, metrics)."""

    def __init__(self, cfg: dict[str, Any]):
        from fedfit.federated import shared_model

        self.cfg = cfg
        self.model = shared_model(cfg)
        self.layout = Layout.of(self.model.state_arrays())
        self.images, self.labels = pool(cfg)
        self.owners = owners(cfg)
        self.total_steps = central_steps(cfg)

    def upload_bytes(self) -> int:
        return upload_bytes(self.images)

    def train(self, flat: np.ndarray, server_round: int) -> tuple[np.ndarray, dict[str, float]]:
        from fedfit.federated import finetune_config

        cfg = self.cfg
        self.model.reset_personal()
        self.model.load_state_arrays(self.layout.unpack(flat, copy=True))
        steps = steps_in_round(self.total_steps, training_rounds(cfg), server_round)
        seed = seeding.derive(cfg["seed"], "centralized", server_round)
        ft = finetune_config(cfg, server_round, steps=steps, seed=seed)
        split_rng = seeding.generator(cfg["seed"], "centralized-split", server_round)
        if cfg["central_tasks"] == "fit":  # FiT's oracle: its tasks, split once, no weight decay
            ft.weight_decay = 0.0
            sampler = FitTasks(self.labels, split_rng, min_way=cfg["min_way"])
        elif cfg["central_tasks"] == "client":  # each step one client's own task, as its fine-tuning draws it
            sampler = ClientTasks(self.labels, self.owners, ft, split_rng)
        else:
            sampler = PooledEpisodes(self.labels, cfg["shots"], split_rng, min_way=cfg["min_way"],
                                     max_way=cfg["max_way"] or cfg["classes_per_client"], split=cfg["episode_split"])
        res = finetune(self.model, self.images, self.labels, ft, sampler=sampler)
        new = self.layout.pack(self.model.state_arrays())
        metrics = {"train_seconds": res.seconds, "train_images": int(res.images), "train_steps": int(res.steps),
                   "update_norm": float(np.linalg.norm(new.astype(np.float64) - flat)),
                   "pooled_images": int(len(self.labels))}
        if res.losses:
            metrics["train_loss"] = float(res.mean_loss)
        return new, metrics


def pooled_personal(head, queries: list[tuple[int, dict[str, np.ndarray]]]) -> dict[int, float]:
    """FiT's oracle's personalized accuracy: client -> the fraction of its query features (``queries``:
    (client, {"query_features" (m, d), "query_labels" (m,), "class_ids" (C,)})) that ``head`` (a
    ``global_head.GlobalHead`` over the pooled statistics of every training client) classifies right when
    it chooses among the client's own classes only (the pooled prototypes of each client's classes)."""
    out = {}
    for client, q in queries:
        cols = np.flatnonzero(np.isin(head.class_ids, q["class_ids"]))
        if not len(cols) or not len(q["query_labels"]):
            continue
        logits = head.logits(q["query_features"])[:, cols]
        out[client] = float(np.mean(head.class_ids[cols][logits.argmax(1)] == q["query_labels"]))
    return out
