"""What a run says about itself before its rounds: config.json's record (the resolved options, the state
layout, where every number's images come from, what the method's options resolve to) and its first
lines (what it trains and sends, a secret DP run's warning, skipped files, partitions without a node)."""
from __future__ import annotations

from typing import Any, Callable

from fedfit import faults
from fedfit.clock import Clock, profile_table
from fedfit.config import run_name
from fedfit.methods import Method
from fedfit.preflight import RunSetup
from strategies.nodes import NodeDirectory
from strategies.training import overlaps


def config_record(cfg: dict[str, Any], setup: RunSetup, method: Method, clock: Clock | None) -> dict[str, Any]:
    """config.json: the resolved options, the state layout, where the images come from."""
    layout = setup.layout
    return {**cfg, "name": run_name(cfg), "state_size": layout.size, "state_bytes_fp32": 4 * layout.size,
            "layout_fingerprint": layout.fingerprint, "new_users_resolved": setup.new_users,
            "hostile_clients": faults.hostile_clients(cfg), **_resolved(cfg, method), "data_images": setup.images,
            "data_classes": setup.classes, "data_skipped": setup.skipped or {},
            "devices_median": profile_table(clock.devices) if clock else None}


def _resolved(cfg: dict[str, Any], method: Method) -> dict[str, Any]:
    """What the options resolve to: where every number's images come from, the steps, the method's own."""
    from fedfit.clock import REFERENCE_IMAGE_SIZE, train_s_per_image
    from fedfit.config import local_steps, training_rounds
    from fedfit.federated import client_lr, splits

    return {"splits": splits(cfg), "local_steps_resolved": local_steps(cfg), "training_rounds": training_rounds(cfg),
            "client_lr_resolved": client_lr(cfg, 1),
            "overlap_eval_resolved": overlaps(cfg),
            "clock": {"train_s_per_image": train_s_per_image(cfg), "reference_image_size": REFERENCE_IMAGE_SIZE},
            **method.resolved()}


def announce(progress: Callable[[str], None], cfg: dict[str, Any], setup: RunSetup, method: Method,
             run_dir, done: int | None, secret: bool) -> None:
    """The run's first lines, before any message."""
    progress(f"fedfit: {run_name(cfg)}: {method.describe(setup.layout.size)}, {cfg['num_clients']} clients "
             f"+ {setup.new_users} new users, {cfg['rounds']} rounds -> {run_dir}"
             + (f" (resumed after round {done})" if done is not None else ""))
    if secret:
        progress(f"fedfit: dp = {cfg['dp']}, dp_randomness = secret: each round's training clients, the DP "
                 f"noise and training faults come from the operating system's entropy and are written "
                 f"nowhere, so this run is not reproducible (nor is a resumed run bit-exact); "
                 f"dp_randomness = seeded reproduces it but reports no amplified epsilon")
    if setup.skipped:
        progress(f"fedfit: {cfg['dataset']}: {setup.images:,} images in {setup.classes} classes; "
                 f"files skipped: " + ", ".join(f"{n:,} {why}" for why, n in sorted(setup.skipped.items())))


def announce_missing(progress: Callable[[str], None], cfg: dict[str, Any], setup: RunSetup,
                     directory: NodeDirectory) -> None:
    """After discovery: which partitions no node holds (counted absent every round)."""
    missing = directory.missing()
    if missing:
        n = cfg["num_clients"]
        train, new = [p for p in missing if p < n], [p for p in missing if p >= n]
        progress(f"fedfit: {len(directory.by_partition)} nodes answered; no node holds "
                 + ", ".join(x for x in (f"{len(train)} training partitions" if train else "",
                                         f"{len(new)} new users' partitions" if new else "") if x)
                 + f" ({_ranges(missing)}): they are counted absent every round (start as many "
                 f"nodes as num_clients + new users = {setup.partitions}, or set new_users = 0)")


def _ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> '0..2, 5'."""
    out, start = [], None
    for i, x in enumerate(ids):
        if start is None:
            start = x
        if i + 1 == len(ids) or ids[i + 1] != x + 1:
            out.append(f"{start}..{x}" if x > start else str(x))
            start = None
    return ", ".join(out)
