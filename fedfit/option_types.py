"""``Options``: the resolved options as a ``TypedDict`` (one key per option of ``defaults.toml``, typed
as its default), so ``cfg: Options`` gives a type checker every ``cfg["key"]`` (``mypy``, ``pyright``).
Kept equal to ``defaults.toml`` by ``tests/test_config.py``; the values are checked at run time by
``fedfit.config.load_config`` (types) and ``validate`` (``options.toml``)."""
from __future__ import annotations

from typing import TypedDict


class Options(TypedDict):
    name: str
    method: str
    adapter: str
    strategy: str
    seed: int
    data_seed: int
    dataset: str
    data_root: str
    cache_dir: str
    image_size: int
    num_clients: int
    new_users: int
    partition: str
    dirichlet_alpha: float
    quantity_skew: float
    classes_per_client: int
    shots: int
    queries: int
    query_split: str
    history: int
    backbone: str
    backbone_weights: str
    head: str
    protonets_temperature: str
    feature_norm: str
    iciia_partitions: int
    case_linear_steps: int
    case_training: str
    rounds: int
    clients_per_round: int
    local_steps: int
    accumulate_tasks: int
    central_steps: int
    central_tasks: str
    episode_split: str
    lr: float
    lr_schedule: str
    lr_decay: float
    lr_decay_every: int
    weight_decay: float
    min_way: int
    max_way: int
    prox_mu: float
    server_lr: float
    server_momentum: float
    trim_beta: float
    malicious: int
    multikrum_keep: int
    dp: str
    dp_noise: float
    dp_clip: float
    dp_clipping: str
    dp_delta: float
    dp_randomness: str
    codec_up: str
    codec_down: str
    delta: bool
    error_feedback: bool
    dropout: float
    straggler: float
    straggler_delay_s: float
    poison_fraction: float
    poison: str
    poison_scale: float
    devices: str
    down_mbps: float
    up_mbps: float
    latency_ms: float
    train_s_per_image: float
    availability: str
    over_select: int
    deadline_s: float
    eval_clients: int
    eval_every: int
    personalize_steps: int
    global_eval: bool
    engine: str
    overlap_eval: bool
    num_cpus: int
    num_gpus: float
    ray_address: str
    device: str
    precision: str
    out_dir: str
    tracker: str
    tracker_group: str
    timeout_s: int
