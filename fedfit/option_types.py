"""``Options``: the resolved options as a ``TypedDict`` (one key per option, typed as its default), so
``cfg: Options`` gives a type checker every ``cfg["key"]`` (``mypy``, ``pyright``). GENERATED from the
options' declaration (``fedfit.options``) by ``python scripts/gen_options.py``; do not edit
(``tests/test_options.py`` fails when it is stale)."""
from __future__ import annotations

from typing import TypedDict


class Options(TypedDict):
    name: str
    method: str
    seed: int
    dataset: str
    data_root: str
    cache_dir: str
    data_seed: int
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
    backbone: str
    backbone_weights: str
    adapter: str
    head: str
    protonets_temperature: str
    feature_norm: str
    history: int
    iciia_partitions: int
    case_linear_steps: int
    case_training: str
    local_steps: int
    accumulate_tasks: int
    episode_split: str
    lr: float
    lr_schedule: str
    lr_decay: float
    lr_decay_every: int
    weight_decay: float
    min_way: int
    max_way: int
    central_steps: int
    central_tasks: str
    rounds: int
    clients_per_round: int
    strategy: str
    server_lr: float
    server_momentum: float
    prox_mu: float
    trim_beta: float
    malicious: int
    multikrum_keep: int
    max_failures: float
    codec_up: str
    codec_down: str
    delta: bool
    error_feedback: bool
    dp: str
    dp_noise: float
    dp_clip: float
    dp_clipping: str
    dp_delta: float
    dp_randomness: str
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
    timeout_s: int
    out_dir: str
    tracker: str
    tracker_group: str
