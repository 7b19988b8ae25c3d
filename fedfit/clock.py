"""The simulated clock: what a round would take on real devices and networks, never wall time.

Every client has a ``Device``: a compute speed factor (1 = the reference machine ``fedfit bench``
calibrated), downlink and uplink bandwidth (Mbit/s), a latency (ms) and when it is online. A client's
simulated time in one training exchange is

    latency + bytes down * 8 / downlink + images trained * seconds per image / speed + bytes up * 8 / uplink

with the bytes the meter really measured (``*_wire``) and the images the client's episodic steps really
processed (its ``train_images`` metric): the same options give the same clock, on any machine.

Device profiles (``devices``):
  * ``mobile`` (default): seeded log-normal draws per client, the shape FedScale (Lai et al., ICML 2022)
    uses - compute speeds spread ~10x across phones as in AI Benchmark, bandwidths spread as in MobiPerf.
    The medians are stated assumptions, not measurements of ours: downlink 20 Mbit/s, uplink 5 Mbit/s
    (sigma 0.8 each, ln units), latency 50 ms (sigma 0.5), speed 1.0 (sigma 0.7, clipped to 0.1 .. 10).
    For a study, use a trace.
  * ``uniform``: every client a speed-1 device with downlink 20 / uplink 5 Mbit/s, latency 50 ms.
  * a CSV trace: columns ``client, speed, down_mbps, up_mbps, latency_ms`` and optionally ``online``
    (simulated-second intervals ``start-end`` joined by ``;``; a client outside them is offline; an empty
    cell or no column: always online). Every partition needs a row.
``down_mbps`` / ``up_mbps`` / ``latency_ms`` set one value for every client over the profile's.

Availability (``availability``): ``always``; ``diurnal``: each client is online in one daily window of its
local time (seeded: a time zone offset ~ N(0, 3) h, the window starting at 22 h +- 2 h and lasting 4 to
12 h - devices train when idle and charging, mostly at night: Bonawitz et al., "Towards federated learning
at scale", MLSys 2019); the simulated clock starts at 00:00 UTC. A trace's ``online`` column overrides it.

A round (``settle``): the server samples among the clients online at its start; it ends when
``clients_per_round`` replies have arrived (over-selection: more were sampled, the first K are kept) or at
``deadline_s``; a client that goes offline before its reply is a dropout; replies after the end are
stragglers. Without over-selection and deadline the round waits for every reply.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedfit import seeding

# The clock's calibration, a fixed figure: `fedfit bench` (its clock_calibration) on the reference machine
# (2-core x86 CPU, torch 2.14.1, 2 threads), efficientnet_lite0 + FiLM at 96 px: ClientWork.train 77.5
# images/s (forward + backward); scaled by pixels for other sizes. The runtime never runs the bench.
REFERENCE_TRAIN_S_PER_IMAGE = 1 / 77.5
REFERENCE_IMAGE_SIZE = 96
MOBILE = {"down_mbps": (20.0, 0.8), "up_mbps": (5.0, 0.8), "latency_ms": (50.0, 0.5), "speed": (1.0, 0.7)}
TRACE_COLUMNS = ("client", "speed", "down_mbps", "up_mbps", "latency_ms")


class ClockError(ValueError):
    """A device trace or clock option that cannot be used (the message says what to change)."""


@dataclass(frozen=True)
class Device:
    """One client's device. speed: compute factor (images/s x speed); bandwidths in Mbit/s; latency in ms;
    online: absolute simulated-second intervals, or None (always, or the diurnal window)."""

    speed: float
    down_mbps: float
    up_mbps: float
    latency_ms: float
    online: tuple[tuple[float, float], ...] | None = None
    window: tuple[float, float, float] | None = None  # diurnal: (time zone h, start h, length h)

    def seconds(self, bytes_down: int, bytes_up: int, images: int, s_per_image: float) -> float:
        """Simulated seconds of one training exchange (module docstring)."""
        return (self.latency_ms / 1e3 + bytes_down * 8 / (self.down_mbps * 1e6)
                + images * s_per_image / self.speed + bytes_up * 8 / (self.up_mbps * 1e6))

    def is_online(self, t: float) -> bool:
        if self.online is not None:
            return any(a <= t < b for a, b in self.online)
        if self.window is not None:
            tz, start, length = self.window
            return ((t / 3600 + tz - start) % 24) < length
        return True

    def offline_at(self, t: float) -> float:
        """When the client, online at ``t``, next goes offline (inf: never)."""
        if self.online is not None:
            return next((b for a, b in self.online if a <= t < b), t)
        if self.window is not None:
            tz, start, length = self.window
            return t + (length - (t / 3600 + tz - start) % 24) * 3600
        return math.inf

    def next_online(self, t: float) -> float:
        """The first time >= ``t`` the client is online (inf: never again)."""
        if self.is_online(t):
            return t
        if self.online is not None:
            return min((a for a, _ in self.online if a > t), default=math.inf)
        if self.window is not None:
            tz, start, _ = self.window
            return t + ((start - (t / 3600 + tz)) % 24) * 3600
        return t


def train_s_per_image(cfg: dict[str, Any]) -> float:
    """Seconds per training image on a speed-1 device: ``train_s_per_image``, or the reference scaled by pixels."""
    if float(cfg["train_s_per_image"]) > 0:
        return float(cfg["train_s_per_image"])
    return REFERENCE_TRAIN_S_PER_IMAGE * (int(cfg["image_size"]) / REFERENCE_IMAGE_SIZE) ** 2


def _intervals(text: str, where: str) -> tuple[tuple[float, float], ...] | None:
    text = (text or "").strip()
    if not text:
        return None
    out = []
    for part in text.split(";"):
        try:
            a, b = (float(x) for x in part.split("-"))
        except ValueError:
            raise ClockError(f"{where}: online interval {part!r} is not START-END in simulated seconds") from None
        if not 0 <= a < b:
            raise ClockError(f"{where}: online interval {part!r} needs 0 <= start < end")
        out.append((a, b))
    return tuple(sorted(out))


def read_trace(path: str | Path, partitions: int) -> list[Device]:
    """The devices of partitions 0 .. partitions - 1 from a CSV trace (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ClockError(f"devices = {str(path)!r}: no such trace file (or use mobile | uniform)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ClockError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); a trace is a CSV file") from None
    try:
        return _trace_rows(path, csv.DictReader(io.StringIO(text, newline="")), partitions)
    except csv.Error as e:
        raise ClockError(f"{path}: not a readable CSV file ({e})") from None


def _trace_rows(path: Path, reader: csv.DictReader, partitions: int) -> list[Device]:
    """``read_trace``'s rows, checked (ClockError naming the line)."""
    missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ClockError(f"{path}: the trace lacks the column(s) {', '.join(missing)} "
                         f"(needs {', '.join(TRACE_COLUMNS)}[, online])")
    rows: dict[int, Device] = {}
    for i, row in enumerate(reader, start=2):
        where = f"{path}:{i}"
        try:
            client = int(row["client"])
            speed, down, up, lat = (float(row[c]) for c in TRACE_COLUMNS[1:])
        except (TypeError, ValueError):
            raise ClockError(f"{where}: client must be an integer and speed, down_mbps, up_mbps, latency_ms "
                             f"numbers") from None
        if not (speed > 0 and down > 0 and up > 0 and lat >= 0) or not all(map(math.isfinite, (speed, down, up, lat))):
            raise ClockError(f"{where}: speed, down_mbps and up_mbps must be > 0 and latency_ms >= 0")
        if client in rows:
            raise ClockError(f"{where}: client {client} has a second row")
        rows[client] = Device(speed, down, up, lat, _intervals(row.get("online") or "", where))
    absent = [p for p in range(partitions) if p not in rows]
    if absent:
        raise ClockError(f"{path}: no row for {len(absent)} of the {partitions} partitions (first: {absent[0]}); "
                         f"the trace needs one per client and new user")
    return [rows[p] for p in range(partitions)]


def devices(cfg: dict[str, Any], partitions: int) -> list[Device]:
    """Every partition's device, a function of (seed, partition id) and the options (module docstring)."""
    kind = str(cfg["devices"])
    if kind == "mobile":
        out = []
        for p in range(partitions):
            z = seeding.generator(cfg["seed"], "device", p).standard_normal(4)
            d = {k: med * math.exp(sigma * zi) for (k, (med, sigma)), zi in zip(MOBILE.items(), z)}
            out.append(Device(min(10.0, max(0.1, d["speed"])), d["down_mbps"], d["up_mbps"], d["latency_ms"]))
    elif kind == "uniform":
        out = [Device(1.0, MOBILE["down_mbps"][0], MOBILE["up_mbps"][0], MOBILE["latency_ms"][0])] * partitions
    else:
        out = read_trace(kind, partitions)
    fixed = {k: float(cfg[k]) for k in ("down_mbps", "up_mbps") if float(cfg[k]) > 0}
    if float(cfg["latency_ms"]) >= 0:
        fixed["latency_ms"] = float(cfg["latency_ms"])
    if cfg["availability"] == "diurnal":
        windows = []
        for p in range(partitions):
            u = seeding.generator(cfg["seed"], "availability", p)
            windows.append((float(u.normal(0, 3)), float(22 + u.normal(0, 2)) % 24, float(u.uniform(4, 12))))
    else:
        windows = [None] * partitions
    return [Device(d.speed, fixed.get("down_mbps", d.down_mbps), fixed.get("up_mbps", d.up_mbps),
                   fixed.get("latency_ms", d.latency_ms), d.online, None if d.online is not None else w)
            for d, w in zip(out, windows)]


@dataclass
class Settlement:
    """How one training exchange ended on the clock: ``kept`` partitions (aggregated, in finish order),
    ``late`` (stragglers: after the K-th reply or the deadline), ``offline`` (went offline before their
    reply), per-partition ``finish`` (simulated seconds after the round's start) and the round's ``seconds``."""

    kept: list[int]
    late: list[int]
    offline: list[int]
    finish: dict[int, float]
    seconds: float


class Clock:
    """The run's simulated time (seconds since 00:00 UTC of day 0) and its devices."""

    def __init__(self, cfg: dict[str, Any], partitions: int, now: float = 0.0):
        self.devices = devices(cfg, partitions)
        self.s_per_image = train_s_per_image(cfg)
        self.k, self.deadline = int(cfg["clients_per_round"]), float(cfg["deadline_s"])
        self.over_select = int(cfg["over_select"])
        self.now = float(now)

    def state(self) -> dict[str, float]:
        """What a resumed run needs (checkpointed): the simulated time."""
        return {"now": self.now}

    def load_state(self, state: dict[str, Any]) -> None:
        self.now = float(state["now"])

    def online(self, partitions: list[int]) -> list[int]:
        return [p for p in partitions if self.devices[p].is_online(self.now)]

    def wait_for_online(self, partitions: list[int]) -> bool:
        """Advance to the first time any of ``partitions`` is online; False when none ever will be."""
        t = min((self.devices[p].next_online(self.now) for p in partitions), default=math.inf)
        if math.isinf(t):
            return False
        self.now = max(self.now, t)
        return True

    def settle(self, work: dict[int, tuple[int, int, int]], k: int | None = None) -> Settlement:
        """``work``: partition -> (bytes down, bytes up, images trained) of every client that replied.
        Keeps the first ``k`` (default clients_per_round) replies within the deadline; advances the clock."""
        k = self.k if k is None else k
        finish = {p: self.devices[p].seconds(d, u, n, self.s_per_image) for p, (d, u, n) in work.items()}
        offline = sorted(p for p, s in finish.items() if self.devices[p].offline_at(self.now) < self.now + s)
        arrived = sorted((s, p) for p, s in finish.items() if p not in offline)
        in_time = [(s, p) for s, p in arrived if self.deadline <= 0 or s <= self.deadline]
        cut = self.over_select > 0 or self.deadline > 0  # else the round waits for every reply
        kept = in_time[:k] if cut else in_time
        chosen = {p for _, p in kept}
        late = sorted(p for _, p in arrived if p not in chosen)
        if cut and len(kept) >= k:
            seconds = kept[-1][0]
        elif self.deadline > 0:
            seconds = self.deadline
        else:
            seconds = max((s for s, _ in kept), default=0.0)
        self.now += seconds
        return Settlement([p for _, p in kept], late, offline, finish, seconds)


def profile_table(devs: list[Device]) -> dict[str, float]:
    """Medians of the devices (for a run's first line and config.json)."""
    a = np.array([[d.speed, d.down_mbps, d.up_mbps, d.latency_ms] for d in devs]) if devs else np.zeros((1, 4))
    med = np.median(a, axis=0)
    return {"speed": float(med[0]), "down_mbps": float(med[1]), "up_mbps": float(med[2]), "latency_ms": float(med[3])}
