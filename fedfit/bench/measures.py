"""What ``fedfit bench`` measures without Flower or Ray: the bare compute limit of the run's model,
the clients' throughput through fedfit's own client code, and the ratios read from a run's rounds.

* ``bare_throughput``: the run's frozen backbone (``create_backbone``) with the run's adapter attached,
  in a plain loop over one episodic step's images (context + target), forward-only and
  forward+backward (gradients to the adapter's parameters), images/s.
* ``client_throughput``: ``ClientWork(cfg, pid).train`` / ``.evaluate`` (what the ClientApp runs),
  images/s from the work's own metrics.
* ``round_efficiency`` / ``wire_efficiency``: from ``rounds.jsonl`` records (dicts).
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from importlib import metadata
from typing import Any, Callable

import numpy as np
import torch

TARGETS = {"train_vs_bare": (">=", 0.90), "round_vs_compute": ("<=", 1.25), "wire_vs_payload": ("<=", 1.05)}
"""The project's targets for the three ratios: (comparison, bound)."""


def meets(name: str, value: float | None) -> bool | None:
    """Whether ``value`` meets the target of ratio ``name`` (None when there is no value)."""
    if value is None:
        return None
    op, bound = TARGETS[name]
    return value >= bound if op == ">=" else value <= bound


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is not positive."""
    return a / b if a is not None and b is not None and b > 0 else None


# --- machine ------------------------------------------------------------------------------------

def run_device(cfg: dict[str, Any]) -> str:
    """The torch device one client of this run computes on: ``device`` when set; with ``auto`` CUDA
    only where a client gets a GPU (``num_gpus`` > 0 on Ray / Flower; any visible GPU inline)."""
    if cfg["device"] != "auto":
        return cfg["device"]
    gpu = torch.cuda.is_available() and (cfg["engine"] == "inline" or cfg["num_gpus"] > 0)
    return "cuda" if gpu else "cpu"


def device_name(device: str) -> str:
    """``cpu`` or the CUDA device's name as torch gives it."""
    d = torch.device(device)
    return torch.cuda.get_device_name(d) if d.type == "cuda" else d.type


def client_threads(cfg: dict[str, Any]) -> int:
    """Torch threads of one client: its ``num_cpus`` (as the Ray workers' OMP_NUM_THREADS)."""
    return max(1, int(cfg["num_cpus"]))


def client_workers(cfg: dict[str, Any], cpus: float | None = None, gpus: float | None = None) -> int:
    """Clients that can work at once on this machine: CPUs / num_cpus (and GPUs / num_gpus where clients
    take GPUs) in Ray's units, as fedfit's actor pool sizes itself; 1 for the inline engine."""
    if cfg["engine"] == "inline":
        return 1
    from strategies.ray_cluster import concurrent_clients

    cpus = float(os.cpu_count() or 1) if cpus is None else cpus
    gpus = float(torch.cuda.device_count()) if gpus is None else gpus
    return max(1, concurrent_clients([{"CPU": cpus, "GPU": gpus}], cfg["num_cpus"], cfg["num_gpus"]))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    """CPU count, torch threads, library versions, load average (1, 5, 15 min) right now."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        affinity = None
    return {"cpu_count": os.cpu_count(), "cpu_affinity": affinity, "torch_threads_default": torch.get_num_threads(),
            "cuda_devices": torch.cuda.device_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "flwr": _version("flwr"),
            "ray": _version("ray"), "timm": _version("timm"), "numpy": np.__version__,
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# --- (a) the bare limit -------------------------------------------------------------------------

def episode_images(cfg: dict[str, Any]) -> tuple[int, int]:
    """(images, context images) of one episodic step at full way: every class of a client (capped by
    ``max_way``) with all its ``shots`` support images, split ceil(shots / 2) context / rest target."""
    way = cfg["classes_per_client"] if cfg["max_way"] <= 0 else min(cfg["classes_per_client"], cfg["max_way"])
    return way * cfg["shots"], way * math.ceil(cfg["shots"] / 2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device: torch.device, iterations: int) -> float:
    """Seconds for ``iterations`` calls of ``step`` (device work included)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iterations):
        step()
    _sync(device)
    return time.perf_counter() - t0


def bare_throughput(cfg: dict[str, Any], device: str | None = None, **options) -> dict[str, Any]:
    """``_bare_throughput`` (below), then its model freed: on CUDA the cached blocks go back to the driver,
    so the bench's own model holds no GPU memory while the federation it measures runs."""
    out = _bare_throughput(cfg, device=device, **options)
    if torch.device(out["device"]).type == "cuda":
        torch.cuda.empty_cache()
    return out


def _bare_throughput(cfg: dict[str, Any], device: str | None = None, repeats: int = 5, warmup: int = 2,
                    repeat_seconds: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """Images/s of the run's backbone + adapter on one episodic step's images (``episode_images``) at
    the run's resolution, in the calling thread's torch threads: ``forward`` (eval mode, no gradients,
    as evaluation embeds) and ``forward_backward`` (train mode, backward to the adapter's trainable
    parameters, as a training step; without trainable parameters the forward only, with autograd on).
    The backbone runs at the run's ``precision`` (bf16 autocast on CUDA by default, as in training).
    Each: ``warmup`` untimed steps, then ``repeats`` timed runs of as many steps as take about
    ``repeat_seconds``; the median run's images/s."""
    from fedfit.adapters import create_adapter
    from fedfit.backbones import create_backbone
    from fedfit.federated import adapter_name, adapter_options, head_name
    from fedfit.heads import create_head
    from fedfit.model import FewShotModel

    dev = torch.device(device or run_device(cfg))
    backbone = create_backbone(cfg["backbone"], weights=cfg["backbone_weights"], device=dev, precision=cfg["precision"])
    adapter = create_adapter(adapter_name(cfg), backbone, **adapter_options(cfg))
    model = FewShotModel(backbone, adapter, create_head(head_name(cfg), min_shots=cfg["shots"])).to(dev)
    params = [p for p in adapter.parameters() if p.requires_grad]
    batch, n_ctx = episode_images(cfg)
    s = cfg["image_size"]
    images = np.random.default_rng(seed).integers(0, 256, size=(batch, s, s, 3), dtype=np.uint8)
    x = backbone.preprocess(images)
    ctx, tgt = x[:n_ctx], x[n_ctx:]

    def forward() -> None:
        with torch.no_grad():
            model.embed_task(ctx, tgt)

    def forward_backward() -> None:
        c, t = model.embed_task(ctx, tgt)
        if params:
            (c.square().mean() + t.square().mean()).backward()
            for p in params:
                p.grad = None

    out: dict[str, Any] = {"device": str(dev), "bf16_autocast": backbone.bf16, "threads": torch.get_num_threads(),
                           "image_size": s,
                           "batch_images": batch, "context_images": n_ctx, "trainable_parameters":
                           int(sum(p.numel() for p in params)), "backward": bool(params)}
    for name, step, mode in (("forward", forward, False), ("forward_backward", forward_backward, True)):
        model.train(mode)
        per_step = _timed(step, dev, max(1, warmup)) / max(1, warmup)
        iterations = max(1, math.ceil(repeat_seconds / max(per_step, 1e-6)))
        runs = [batch * iterations / _timed(step, dev, iterations) for _ in range(max(1, repeats))]
        out[f"{name}_images_per_s"] = statistics.median(runs)
        out[f"{name}_runs_images_per_s"] = runs
        out[f"{name}_iterations_per_run"] = iterations
        flops = step_flops(step)
        out[f"{name}_flops_per_image"] = flops / batch
    model.eval()
    limit = matmul_flops_per_s(dev)
    out["matmul_gflops_per_s"] = limit / 1e9
    for name in ("forward", "forward_backward"):  # the achieved FLOP rate as a share of dense matmul's
        out[f"{name}_fraction_of_matmul"] = out[f"{name}_images_per_s"] * out[f"{name}_flops_per_image"] / limit
    return out


def step_flops(step: Callable[[], None]) -> float:
    """FLOPs of one call of ``step`` by torch's own counter (``torch.utils.flop_counter``: convolutions,
    matmuls and their backward; element-wise work is not counted, so this is a lower bound)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def matmul_flops_per_s(device: torch.device, n: int = 1024, seconds: float = 0.5, repeats: int = 3) -> float:
    """The machine's dense float32 matmul rate in this thread's torch threads (n x n by n x n, 2 n^3
    FLOPs each; the median of ``repeats`` runs of about ``seconds``): the limit the bench compares to."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)

    def mm() -> None:
        a @ b

    per = _timed(mm, device, 2) / 2
    k = max(1, math.ceil(seconds / max(per, 1e-6)))
    return statistics.median(2 * n ** 3 * k / _timed(mm, device, k) for _ in range(repeats))


# --- (b) the clients' own code ------------------------------------------------------------------

def client_throughput(cfg: dict[str, Any], clients: int = 3, server_round: int = 1, warmup: bool = True) -> dict:
    """``ClientWork(cfg, pid).train`` and ``.evaluate`` of the first ``clients`` training clients from the
    initial state, in this thread's torch threads. ``train_images_per_s`` = sum of ``train_images`` /
    sum of ``train_seconds`` (the work's own metrics: ``finetune``'s steps); ``eval_images_per_s`` =
    images embedded (support + query, + history for adapters that use one) / sum of ``eval_seconds``.
    ``warmup``: one untimed training of client 0 first (a warm process, as in the actor pool).
    ``setup_seconds``: building a client's ``ClientWork`` (its images copied out of the data set), which
    the ClientApp repeats whenever the client is not among the few it keeps."""
    from fedfit.federated import ClientWork, initial_state

    _, flat = initial_state(cfg)
    n = max(1, min(clients, cfg["num_clients"]))
    if warmup:
        ClientWork(cfg, 0).train(flat, server_round, steps=min(2, cfg["local_steps"]))
    per_client = []
    for pid in range(n):
        t0 = time.perf_counter()
        work = ClientWork(cfg, pid)
        setup = time.perf_counter() - t0
        _, m = work.train(flat, server_round)
        ev, _ = work.evaluate(flat, server_round)
        d = work.data
        embedded = len(d.support_x) + len(d.query_x)
        if work.model.adapter.uses_history and d.history_x is not None:
            embedded += len(d.history_x)
        per_client.append({"partition": pid, "setup_seconds": setup, "train_images": int(m["train_images"]),
                           "train_seconds": float(m["train_seconds"]), "train_steps": int(m["train_steps"]),
                           "eval_images": embedded, "eval_seconds": float(ev["eval_seconds"])})
    train_images = sum(c["train_images"] for c in per_client)
    train_seconds = sum(c["train_seconds"] for c in per_client)
    eval_images = sum(c["eval_images"] for c in per_client)
    eval_seconds = sum(c["eval_seconds"] for c in per_client)
    return {"clients": n, "threads": torch.get_num_threads(),
            "setup_seconds_mean": sum(c["setup_seconds"] for c in per_client) / n, "train_images": train_images,
            "train_seconds": train_seconds,
            "train_images_per_s": ratio(train_images, train_seconds) if train_images else None,
            "eval_images": eval_images, "eval_seconds": eval_seconds,
            "eval_images_per_s": ratio(eval_images, eval_seconds), "per_client": per_client}


def paired_train_vs_bare(cfg: dict[str, Any], pairs: int = 5, device: str | None = None) -> dict[str, Any]:
    """``train_vs_bare`` robust to a machine whose speed drifts (shared cores, turbo, other jobs):
    ``pairs`` times, one bare forward+backward run and, right after, one client's real training
    (``ClientWork.train`` of clients 0, 1, ... from the initial state) of about the same length; the
    ratio of each pair, and their median (the figure reported). Images/s as in ``bare_throughput``."""
    from fedfit.federated import ClientWork, initial_state

    _, flat = initial_state(cfg)
    n = max(1, min(pairs, cfg["num_clients"]))
    ClientWork(cfg, 0).train(flat, 1, steps=min(2, cfg["local_steps"]))  # a warm process, as in the pool
    out = []
    for i in range(max(1, pairs)):
        work = ClientWork(cfg, i % n)
        _, m = work.train(flat, 1)
        client = m["train_images"] / m["train_seconds"] if m["train_seconds"] > 0 else None
        bare = bare_throughput(cfg, device=device, repeats=1, warmup=1,
                               repeat_seconds=max(0.5, float(m["train_seconds"])))["forward_backward_images_per_s"]
        out.append({"client_images_per_s": client, "bare_images_per_s": bare, "ratio": ratio(client, bare)})
    ratios = [x["ratio"] for x in out if x["ratio"] is not None]
    return {"pairs": out, "train_vs_bare": statistics.median(ratios) if ratios else None,
            "ratio_min": min(ratios) if ratios else None, "ratio_max": max(ratios) if ratios else None}


# --- (c), (f) from rounds.jsonl -----------------------------------------------------------------

def client_compute_seconds(record: dict[str, Any], train: bool = True, ahead: dict[str, Any] | None = None) -> float:
    """Clients' compute in a round's wall time: the sum over its clients (``per_client``) of
    ``eval_seconds``, plus ``train_seconds`` unless its training ran in the round before (``train``
    False), plus those of ``ahead``: the next round's record, whose training ran together with this
    round's evaluation (``overlap_eval``)."""
    def total(rec: dict[str, Any], key: str) -> float:
        return sum(c.get(key, 0.0) for c in (rec.get("per_client") or {}).values())

    return float(total(record, "eval_seconds") + (total(record, "train_seconds") if train else 0.0)
                 + (total(ahead, "train_seconds") if ahead is not None else 0.0))


def round_efficiency(records: list[dict[str, Any]], workers: int, overlap: bool = False) -> dict[str, Any]:
    """Per round: wall ``seconds``, the clients' compute in that time (``client_compute_seconds``; with
    ``overlap`` an evaluated round's wall time holds the next round's training too), the ideal
    ``compute / workers`` and their ratio; ``round_vs_compute`` = median ratio over rounds >= 1."""
    rows, trained_before = [], False
    for i, r in enumerate(records):
        evaluated = any("eval_seconds" in c for c in (r.get("per_client") or {}).values())
        ahead = records[i + 1] if overlap and evaluated and i + 1 < len(records) else None
        compute = client_compute_seconds(r, train=not trained_before, ahead=ahead)
        trained_before = ahead is not None
        ideal = compute / max(1, workers)
        rows.append({"round": r["round"], "seconds": float(r["seconds"]), "client_compute_s": compute,
                     "ideal_s": ideal, "round_vs_compute": ratio(float(r["seconds"]), ideal)})
    later = [x["round_vs_compute"] for x in rows if x["round"] >= 1 and x["round_vs_compute"] is not None]
    return {"workers": workers, "round_vs_compute": statistics.median(later) if later else None,
            "rounds_counted": len(later), "per_round": rows}


def wire_efficiency(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Training bytes on the wire / payload bytes per direction, summed over all rounds;
    ``wire_vs_payload`` = the larger of the two (None where no payload was sent)."""
    out: dict[str, Any] = {}
    for d in ("up", "down"):
        w = sum(int(r.get(f"bytes_{d}_wire", 0)) for r in records)
        p = sum(int(r.get(f"bytes_{d}_payload", 0)) for r in records)
        out.update({f"bytes_{d}_wire": w, f"bytes_{d}_payload": p, f"wire_vs_payload_{d}": ratio(w, p)})
    both = [out[f"wire_vs_payload_{d}"] for d in ("up", "down") if out[f"wire_vs_payload_{d}"] is not None]
    out["wire_vs_payload"] = max(both) if both else None
    return out


def exchange_split(round_ends: list[float], start: float, calls: list[tuple[float, float, int, str]]) -> list[dict]:
    """Split each round's wall time (from the previous round's end, or ``start``, to its own end;
    perf_counter seconds) into time inside the grid's ``send_and_receive`` calls (``calls``: start,
    end, messages, kind; engine: client work, transport, waiting), also by exchange kind (hello,
    train, evaluate, global), and the rest (server: strategy, codecs, metering, results, checkpoint)."""
    rows, prev = [], start
    for end in round_ends:
        inside = [c for c in calls if prev <= c[0] < end]
        engine = sum(b - a for a, b, _, _ in inside)
        kinds: dict[str, float] = {}
        for a, b, _, kind in inside:
            kinds[kind] = kinds.get(kind, 0.0) + (b - a)
        rows.append({"wall_s": end - prev, "engine_s": engine, "server_s": end - prev - engine,
                     "exchanges": len(inside), "messages": sum(c[2] for c in inside), "engine_by_kind_s": kinds})
        prev = end
    return rows
