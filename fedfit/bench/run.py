"""``fedfit bench``: how close one run gets to its hardware's limit on this machine, and what it costs.

For the options given (``fedfit/defaults.toml`` <- ``--config`` <- ``key=value``), checked first by
``strategies.simulate.preflight`` exactly as ``fedfit simulate`` checks them, then in this order:

(a) ``bare``: the run's backbone + adapter in a plain loop (``fedfit.bench.measures.bare_throughput``),
    forward and forward+backward images/s, at one client's torch threads (``num_cpus``) and device;
(b) ``clients``: ``ClientWork.train`` / ``.evaluate`` images/s (``measures.client_throughput``);
    ``train_vs_bare`` = (b) training images/s / (a) forward+backward images/s, the median over pairs of
    a bare run and a client's training measured right after it (``measures.paired_train_vs_bare``);
(d) ``ray_startup``: ``ray.init`` of a local Ray with the run's resources (as ``simulate`` starts it)
    plus fedfit's actor pool until every actor answered (``RayPoolGrid.wait_ready``); everything
    started is stopped, leftovers by process id. Skipped with ``ray_startup=False`` (null);
(c) ``federation``: ``strategies.simulate.simulate`` for a few rounds on the run's engine, into a run
    directory of the bench's own (a fresh temporary folder; kept next to the JSON with ``keep_run``).
    ``round_vs_compute`` = median over rounds >= 1 of round seconds / (the round's client compute
    seconds / client workers); each round is also split into time inside the grid's exchanges
    (engine) and outside them (server: strategy, codecs, metering, results, checkpoint);
(f) ``wire``: training bytes on the wire / payload bytes per direction, from ``rounds.jsonl``;
(e) ``memory``: a ``fedfit.bench.memory.PssSampler`` over the whole bench: this process, all its
    descendants, and every process whose command line names a Ray session this process started
    (with their descendants); peak PSS in bytes, split into driver / ray_system / actors / other.

To time the exchanges the bench gives ``simulate`` a callback (``_TimeRounds``,
``strategies.callbacks``) that wraps the engine's grid and notes when each round ends.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from fedfit import progress as live
from fedfit.atomic import write_text
from fedfit.bench import measures as core
from fedfit.bench import memory
from fedfit.config import ConfigError
from fedfit.format import human_bytes
from fedfit.results import read_rounds
from strategies.callbacks import Callback

FORMAT = 1
PSS_COUNTS = ("this process (driver) and every live descendant, plus every process started during the bench "
              "whose command line names a Ray session directory of this process (session_*_<driver pid>) and "
              "their descendants; Pss of /proc/PID/smaps_rollup summed over them")


class _TimedGrid:
    """A Grid wrapper that records (start, end, messages, kind) of every ``send_and_receive``
    (perf_counter seconds; kind: the messages' phases as the meter names them, "train+evaluate" for a
    round's evaluation sent together with the next round's training)."""

    def __init__(self, grid):
        self._grid = grid
        self.calls: list[tuple[float, float, int, str]] = []

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        from strategies.metering import MeteredGrid

        messages = list(messages)
        kind = MeteredGrid.exchange_kind(messages)
        t0 = time.perf_counter()
        try:
            return list(self._grid.send_and_receive(messages, timeout=timeout))
        finally:
            self.calls.append((t0, time.perf_counter(), len(messages), kind))


class _TimeRounds(Callback):
    """Times the exchanges (a ``_TimedGrid`` around the engine's grid) and when each round ended; ``seen``
    gets grid, workers (fedfit's pool: its actors), start, ends."""

    def __init__(self, seen: dict[str, Any]):
        self.seen = seen

    def wrap_grid(self, grid):
        from strategies.pool import RayPoolGrid

        self.seen["grid"] = tg = _TimedGrid(grid)
        self.seen["workers"] = grid.size if isinstance(grid, RayPoolGrid) else None
        return tg

    def on_run_start(self, fed, resumed_after):
        self.seen["start"], self.seen["ends"] = time.perf_counter(), []

    def on_round_end(self, fed, record):
        self.seen["ends"].append(time.perf_counter())


# --- Ray processes of this bench ---------------------------------------------------------------

def _our_ray_processes(since: int) -> set[int]:
    """Live Ray processes this process started: named by its session directory, or below it."""
    table = memory.process_table()
    me = os.getpid()
    mine = memory.matching(memory.ray_session_pattern(me), since, table)
    mine |= {p for p in memory.descendants({me}, table) - {me}
             if memory.ray_role(p, memory.cmdline(p), me) != "other"}
    return mine - {me}


def _stop_leftovers(since: int, wait: float = 10.0) -> list[int]:
    """After ``ray.shutdown``: give this bench's Ray processes ``wait`` seconds to exit, then SIGTERM
    (and after 5 s SIGKILL) those still there, by process id; returns the ids that had to be signalled."""
    deadline = time.monotonic() + wait
    while (left := _our_ray_processes(since)) and time.monotonic() < deadline:
        time.sleep(0.25)
    signalled = sorted(left)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 5.0
        while (left := left & _our_ray_processes(since)) and time.monotonic() < deadline:
            time.sleep(0.2)
    return signalled


def ray_startup(cfg: dict[str, Any], partitions: int, since: int, verbose: bool = False) -> dict[str, Any]:
    """Seconds of ``ray.init`` (local Ray with this machine's CPUs and GPUs, or joining ``ray_address``)
    and of fedfit's actor pool until every actor answered; all of it stopped afterwards."""
    import ray
    import torch

    from clients.client_app import make_client_app
    from strategies.pool import RayPoolGrid
    from strategies.simulate import _quiet, ray_options

    if ray.is_initialized():
        return {"ray_startup_s": None, "skipped": "Ray was already initialized in this process"}
    _quiet(verbose)
    env, init = ray_options(cfg, verbose)  # what `fedfit simulate` starts Ray with
    t0 = time.perf_counter()
    try:
        if cfg["ray_address"]:
            ray.init(address=cfg["ray_address"], **init)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, num_gpus=torch.cuda.device_count(), **init)
        t1 = time.perf_counter()
        resources = ray.cluster_resources()
        pool = RayPoolGrid(make_client_app(cfg), partitions, num_cpus=cfg["num_cpus"], num_gpus=cfg["num_gpus"],
                           env=env)
        try:
            pids = pool.wait_ready(timeout=cfg["timeout_s"])
            t2 = time.perf_counter()
        finally:
            pool.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stopped = [] if cfg["ray_address"] else _stop_leftovers(since)
    return {"ray_startup_s": t2 - t0, "ray_init_s": t1 - t0, "pool_ready_s": t2 - t1, "actors": len(pids),
            "cluster_cpus": resources.get("CPU"), "cluster_gpus": resources.get("GPU", 0.0),
            "joined_cluster": bool(cfg["ray_address"]), "leftover_processes_stopped": stopped}


# --- the federation ----------------------------------------------------------------------------

def _median(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r["round"] >= 1 and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def federation(cfg: dict[str, Any], since: int, verbose: bool = False) -> dict[str, Any]:
    """Run ``cfg`` with ``simulate`` (timed exchanges); round efficiency and wire ratios from its rounds."""
    from strategies.simulate import simulate

    seen: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        summary = simulate(cfg, verbose=verbose, callbacks=(_TimeRounds(seen),))
    finally:
        stopped = _stop_leftovers(since) if cfg["engine"] != "inline" and not cfg["ray_address"] else []
    wall = time.perf_counter() - t0
    run_dir = Path(summary["run_dir"])
    records = read_rounds(run_dir)
    workers = seen.get("workers") or core.client_workers(cfg)
    from strategies.training import overlaps

    eff = core.round_efficiency(records, workers, overlap=overlaps(cfg))
    if "grid" in seen and len(seen["ends"]) == len(eff["per_round"]):
        for row, split in zip(eff["per_round"], core.exchange_split(seen["ends"], seen["start"], seen["grid"].calls)):
            row.update(split)
    medians = {f"{k}_median": _median(eff["per_round"], k)
               for k in ("seconds", "client_compute_s", "ideal_s", "engine_s", "server_s")}
    kinds = sorted({k for r in eff["per_round"] for k in r.get("engine_by_kind_s", {})})
    medians["engine_by_kind_s_median"] = {
        k: _median([{"round": r["round"], "v": r.get("engine_by_kind_s", {}).get(k)} for r in eff["per_round"]], "v")
        for k in kinds}
    return {**eff, **medians, "engine": cfg["engine"], "rounds": cfg["rounds"], "wall_s": wall,
            "run_total_seconds": summary.get("total_seconds"), "failures": summary.get("failures", 0),
            "first_failure": summary.get("first_failure"), "leftover_processes_stopped": stopped,
            "wire": core.wire_efficiency(records)}


# --- the whole bench ---------------------------------------------------------------------------

def run_bench(cfg: dict[str, Any], out: str | Path = "bench.json", rounds: int | None = 3, ray: bool = True,
              clients: int = 3, keep_run: bool = False, verbose: bool = False, peers: bool = True,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure ``cfg`` on this machine (module docstring), write the report to ``out`` (JSON) and
    return it. Raises what ``preflight`` raises before any work; ``FederationError`` when the run fails."""
    import torch

    from fedfit.federated import adapter_name
    from strategies.simulate import preflight

    cfg = dict(cfg)
    if rounds is not None:
        cfg["rounds"] = int(rounds)
    if cfg["rounds"] < 1:
        raise ConfigError("fedfit bench needs rounds >= 1 (round 0 trains nothing)")
    out = Path(out)
    if keep_run:
        out.parent.mkdir(parents=True, exist_ok=True)
    run_root = Path(tempfile.mkdtemp(prefix=f"{out.stem}.run-", dir=out.parent if keep_run else None))
    cfg.update(out_dir=str(run_root), name="bench")
    try:
        setup = preflight(cfg)
    except BaseException:
        shutil.rmtree(run_root, ignore_errors=True)
        raise
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = core.machine_facts()
    device = core.run_device(cfg)
    threads_before = torch.get_num_threads()
    sampler = memory.PssSampler(match=memory.ray_session_pattern())
    t0 = time.perf_counter()
    report: dict[str, Any] = {"bench_format": FORMAT, "started": started, "device": core.device_name(device),
                              "torch_device": device, "machine": machine,
                              "threads_per_client": core.client_threads(cfg), "options": cfg}
    flower_too = peers and ray and cfg["engine"] == "ray" and not cfg["ray_address"]
    sampling = True
    phases = live.bar("fedfit bench: phases", total=(5 if ray else 4) + flower_too)
    try:
        sampler.start()
        torch.set_num_threads(core.client_threads(cfg))
        progress(f"fedfit bench: (a) bare {cfg['backbone']} + {adapter_name(cfg)} at {cfg['image_size']} px on "
                 f"{report['device']}, threads: {torch.get_num_threads()}")
        sampler.phase("bare")
        report["bare"] = core.bare_throughput(cfg, device=device)
        phases.advance()
        progress("fedfit bench: (b) ClientWork.train / .evaluate")
        sampler.phase("clients")
        report["clients"] = core.client_throughput({**cfg, "device": device}, clients=clients)
        phases.advance()
        progress("fedfit bench: (a/b) paired: bare run, then a client's training, repeated")
        report["paired"] = core.paired_train_vs_bare({**cfg, "device": device}, device=device)
        phases.advance()
        report["ray_startup"] = None
        if ray:
            progress("fedfit bench: (d) Ray start-up")
            sampler.phase("ray_startup")
            try:
                report["ray_startup"] = ray_startup(cfg, setup.partitions, sampler.since, verbose=verbose)
            except Exception as e:  # recorded; the federation then meets (and reports) the same problem
                report["ray_startup"] = {"ray_startup_s": None, "error": f"{type(e).__name__}: {e}"[:500]}
            phases.advance()
        progress(f"fedfit bench: (c) the federation, {cfg['rounds']} rounds on engine {cfg['engine']}")
        sampler.phase("federation")
        report["federation"] = federation(cfg, sampler.since, verbose=verbose)
        phases.advance()
        report["flower_engine"] = None
        if flower_too:  # the same configuration on Flower's own simulation engine, right after (its memory
            # is not part of fedfit's peak: the sampler pauses)
            progress(f"fedfit bench: (e) the same federation on Flower's simulation engine, {cfg['rounds']} rounds")
            sampler.stop()
            sampling = False
            report["flower_engine"] = federation({**cfg, "engine": "flower", "name": "bench-flower"}, sampler.since,
                                                 verbose=verbose)
            phases.advance()
    finally:
        phases.close()
        if sampling:
            sampler.stop()
        torch.set_num_threads(threads_before)
        if not keep_run:
            shutil.rmtree(run_root, ignore_errors=True)
    report["memory"] = {**sampler.to_dict(), "counts": PSS_COUNTS}
    report["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["seconds"] = time.perf_counter() - t0
    report["run_dir"] = str(run_root / "bench") if keep_run else None
    fed = report["federation"]
    peer = report["flower_engine"]
    report.update(
        # > 1: fedfit's pool is faster than Flower's engine (median seconds per training round, same options)
        pool_vs_flower_engine=(peer["seconds_median"] / fed["seconds_median"]
                               if peer and peer.get("seconds_median") and fed.get("seconds_median") else None),
        train_vs_bare=report["paired"]["train_vs_bare"],
        round_vs_compute=fed["round_vs_compute"], wire_vs_payload=fed["wire"]["wire_vs_payload"],
        wire_vs_payload_up=fed["wire"]["wire_vs_payload_up"], wire_vs_payload_down=fed["wire"]["wire_vs_payload_down"],
        peak_pss_bytes=report["memory"]["peak_pss_bytes"],
        ray_startup_s=(report["ray_startup"] or {}).get("ray_startup_s"))
    ips = report["clients"].get("train_images_per_s")
    # what the simulated clock (fedfit.clock) charges per trained image on a speed-1 device: set
    # train_s_per_image to this to make this machine the reference
    report["clock_calibration"] = {"image_size": int(cfg["image_size"]),
                                   "train_s_per_image": 1 / ips if ips else None}
    report["targets"] = {k: {"op": op, "bound": bound, "pass": core.meets(k, report[k])}
                         for k, (op, bound) in core.TARGETS.items()}
    write_text(out, json.dumps(_ordered(report), indent=2, default=str) + "\n")
    return report


def _ordered(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures first, then the raw numbers."""
    head = ("bench_format", "started", "device", "train_vs_bare", "round_vs_compute", "pool_vs_flower_engine",
            "wire_vs_payload",
            "wire_vs_payload_up", "wire_vs_payload_down", "peak_pss_bytes", "ray_startup_s", "targets")
    return {**{k: report[k] for k in head if k in report}, **{k: v for k, v in report.items() if k not in head}}


# --- the printed table -------------------------------------------------------------------------

def _num(x: float | None, fmt: str = ".3g") -> str:
    return "n/a" if x is None else format(x, fmt)


def format_table(r: dict[str, Any]) -> str:
    """The report as a plain-text table: figure, value, unit, target, pass/fail."""
    bare, cl, fed, mem, rs = r["bare"], r["clients"], r["federation"], r["memory"], r["ray_startup"]
    w = fed["wire"]

    def verdict(name: str) -> tuple[str, str]:
        t = r["targets"][name]
        return f"{t['op']} {t['bound']:g}", {True: "pass", False: "FAIL", None: "n/a"}[t["pass"]]

    split = mem["split_at_peak_bytes"]
    rows = [
        ("bare forward", _num(bare["forward_images_per_s"], ".1f"), "images/s", "", ""),
        ("bare forward+backward", _num(bare["forward_backward_images_per_s"], ".1f"), "images/s", "", ""),
        ("  as a share of dense matmul's FLOP rate (fwd / fwd+bwd)",
         f"{_num(bare['forward_fraction_of_matmul'], '.3f')} / {_num(bare['forward_backward_fraction_of_matmul'], '.3f')}",
         f"of {_num(bare['matmul_gflops_per_s'], '.1f')} GFLOP/s", "", ""),
        ("client training (ClientWork.train)", _num(cl["train_images_per_s"], ".1f"), "images/s", "", ""),
        ("client evaluation (ClientWork.evaluate)", _num(cl["eval_images_per_s"], ".1f"), "images/s", "", ""),
        ("train_vs_bare (median of paired runs)", _num(r["train_vs_bare"]), "ratio", *verdict("train_vs_bare")),
        ("round wall time (median, rounds >= 1)", _num(fed["seconds_median"]), "s", "", ""),
        (f"client compute / {fed['workers']} workers (median)", _num(fed["ideal_s_median"]), "s", "", ""),
        ("  inside exchanges (engine, median)", _num(fed.get("engine_s_median")), "s", "", ""),
        *[(f"    {k} exchange", _num(v), "s", "", "") for k, v in fed.get("engine_by_kind_s_median", {}).items()
          if v is not None],
        ("  outside exchanges (server, median)", _num(fed.get("server_s_median")), "s", "", ""),
        ("round_vs_compute", _num(r["round_vs_compute"]), "ratio", *verdict("round_vs_compute")),
        ("training uplink wire / payload", f"{w['bytes_up_wire']:,} / {w['bytes_up_payload']:,}", "B", "", ""),
        ("training downlink wire / payload", f"{w['bytes_down_wire']:,} / {w['bytes_down_payload']:,}", "B", "", ""),
        ("wire_vs_payload (worse of up / down)",
         f"{_num(r['wire_vs_payload'], '.4f')} ({_num(w['wire_vs_payload_up'], '.4f')} / "
         f"{_num(w['wire_vs_payload_down'], '.4f')})", "ratio", *verdict("wire_vs_payload")),
        ("peak PSS, whole process tree", human_bytes(r["peak_pss_bytes"]), "(1 MB = 1e6 B)", "", ""),
        ("  driver / ray system / actors / other at peak",
         " / ".join(human_bytes(split.get(k, 0)) for k in memory.ROLES), "", "", ""),
        ("Ray start-up (ray.init + actor pool ready)", _num(r["ray_startup_s"]), "s", "", ""),
    ]
    if rs and rs.get("ray_init_s") is not None:
        rows.append((f"  ray.init / {rs['actors']} actors answered",
                     f"{rs['ray_init_s']:.3g} / {rs['pool_ready_s']:.3g}", "s", "", ""))
    peer = r.get("flower_engine")
    if peer:
        rows.append(("pool_vs_flower_engine (Flower's engine s/round / the pool's)",
                     _num(r["pool_vs_flower_engine"]), "ratio", "> 1: pool faster", ""))
        rows.append(("  Flower's engine: s / round (median)", _num(peer.get("seconds_median")), "s", "", ""))
    load = r["machine"].get("loadavg") or [float("nan")]
    load_end = r["machine"].get("loadavg_end") or [float("nan")]
    head = (f"fedfit bench on {r['device']}: {r['options']['dataset']} at {r['options']['image_size']} px, "
            f"{r['options']['backbone']} + {bare['trainable_parameters']:,} trainable, episode batch "
            f"{bare['batch_images']} images, threads per client: {r['threads_per_client']}, engine "
            f"{fed['engine']}, {fed['rounds']} rounds, {r['machine']['cpu_count']} CPUs, load average "
            f"{load[0]:.2f} -> {load_end[0]:.2f}")
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    lines = [head, ""]
    for row in rows:
        lines.append("  ".join(str(c).ljust(widths[i]) if i != 1 else str(c).rjust(widths[i])
                               for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)
