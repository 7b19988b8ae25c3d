"""Checks made before any work starts (before Ray, before round 0), each failing with one line.

``prepare(cfg)`` resolves the data source and plans the partition (indices only: missing data or an
impossible partition is a ``DataError``), builds the model once (unknown backbone or unavailable
weights: ``BackboneError``) and returns what the server needs: the state layout and initial state.
``check_resources`` compares one client's resource request with what the machine (or cluster) has, and
``check_devices`` the ``device`` with what the engine gives a client. What needs Ray's own rules (how many
clients fit, whether a cluster's head answers) is in ``strategies.ray_cluster``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfit.layout import Layout


class ResourceError(RuntimeError):
    """The requested per-client resources cannot be satisfied."""


@dataclass
class RunSetup:
    """What the server knows before round 0."""

    layout: Layout            # the shared state's layout (names, shapes, dtypes) and its fingerprint
    initial: np.ndarray       # float32 (layout.size,): the initial shared state
    num_clients: int          # training clients (partition ids 0 .. num_clients - 1)
    new_users: int            # held-out clients that only evaluate (ids num_clients .. partitions - 1)
    images: int               # images in the data set
    classes: int              # classes in the data set
    support_per_client: int   # labelled images per client (the FedAvg weight)
    feature_dim: int = 0      # width of the features the head sees (class statistics must have it)
    head: str = "protonets"   # the head family (``auto`` resolved)
    client_independent_features: bool = True  # an image's features do not depend on which client embeds it
    skipped: dict[str, int] | None = None  # files of the data source not loaded, by reason

    @property
    def partitions(self) -> int:
        return self.num_clients + self.new_users


def prepare(cfg: dict[str, Any]) -> RunSetup:
    """Data source, partition plan and model of ``cfg``; raises DataError / BackboneError / ValueError."""
    from fedfit.federated import head_name, initial_state, plans, shared_model, source

    data = source(cfg)
    ps = plans(cfg)
    layout, flat = initial_state(cfg)
    adapter = shared_model(cfg).adapter
    return RunSetup(layout=layout, initial=flat, num_clients=cfg["num_clients"],
                    new_users=len(ps) - cfg["num_clients"], images=len(data.labels),
                    classes=data.num_classes, support_per_client=int(len(ps[0].support_y)) if ps else 0,
                    feature_dim=int(shared_model(cfg).backbone.feature_dim), head=head_name(cfg),
                    client_independent_features=not (adapter.has_task_phase or adapter.uses_history),
                    skipped=dict(data.skipped))


def check_devices(cfg: dict[str, Any], gpus: float, where: str = "this machine") -> None:
    """Raise ResourceError for a ``device`` the clients cannot have: ``cuda`` on the Ray / Flower engines
    with ``num_gpus = 0`` (Ray hides every GPU from actors given none), ``cuda:N`` with N >= 1 there
    (each actor sees the GPU Ray gave it as cuda:0), or any ``cuda:N`` beyond the GPUs ``where`` has."""
    device = str(cfg["device"])
    if not device.startswith("cuda"):
        return
    index = int(device[5:]) if device.startswith("cuda:") else 0
    if cfg["engine"] != "inline":
        if cfg["num_gpus"] <= 0:
            raise ResourceError(f"device = {device} with num_gpus = 0: Ray gives the clients no GPU. Set num_gpus "
                                f"> 0 (0.25: four clients per GPU), or device = auto, or engine = inline.")
        if index >= 1:
            raise ResourceError(f"device = {device}: on the {cfg['engine']} engine every client's actor sees the GPU "
                                f"Ray gave it as cuda:0. Use device = cuda (Ray picks the GPU).")
    elif index >= gpus:
        raise ResourceError(f"device = {device}, but {where} has {gpus:g} CUDA GPUs (cuda:0 .. cuda:{int(gpus) - 1})."
                            if gpus > 0 else f"device = {device} but {where} has no CUDA GPU. Use device = auto or "
                                             f"cpu.")


def check_resources(cfg: dict[str, Any], cpus: float, gpus: float, where: str = "this machine") -> None:
    """Raise ResourceError (saying what to change) when one client needs more than ``cpus`` / ``gpus``."""
    if cfg["num_cpus"] > cpus:
        raise ResourceError(f"num_cpus = {cfg['num_cpus']:g} per client, but {where} has {cpus:g} CPUs: no client "
                            f"could ever start. Use num_cpus <= {cpus:g}.")
    if cfg["num_gpus"] > 0 and gpus <= 0:
        raise ResourceError(f"num_gpus = {cfg['num_gpus']:g} per client, but {where} has no GPU. Use num_gpus = 0.")
    if cfg["num_gpus"] > gpus:
        raise ResourceError(f"num_gpus = {cfg['num_gpus']:g} per client, but {where} has {gpus:g} GPUs. "
                            f"Use num_gpus <= {gpus:g} (fractions share a GPU).")
    if str(cfg["device"]).startswith("cuda") and gpus <= 0:
        raise ResourceError(f"device = {cfg['device']} but {where} has no CUDA GPU. Use device = auto or cpu.")
    check_devices(cfg, gpus, where)
