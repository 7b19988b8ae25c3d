"""Figures and tables comparing finished runs (read with ``fedfit.results.read_run``).

``plot_runs`` writes into ``out_dir``::

    accuracy_vs_round.png/.svg   personalized accuracy (%) vs round, new users (held out) dotted, global head
                                 dashed, and a band
                                 (10th percentile to median, else mean +- std) for up to 6 runs
    accuracy_vs_bytes.png/.svg   personalized accuracy (%) vs cumulative wire bytes (log axis); a run
                                 that sends nothing (local-only) is a dashed level at its final accuracy
    pareto.png/.svg              final accuracy vs total wire bytes, Pareto-optimal runs joined
    accuracy_vs_time.png/.svg    personalized accuracy (%) vs simulated seconds (``fedfit.clock``), when the
                                 runs have a simulated clock
    runs.csv                     one row per run: raw numbers (accuracies as fractions, bytes, seconds)
    runs.md                      the same table for humans (percent, KB/MB/GB)

The accuracy figures draw reference levels: the frozen head's accuracy (round 0) when every run starts
from it, or the levels a caller passes (``fedfit sweep`` passes its bounds, mean over seeds).

``merge_seeds=True`` (what ``fedfit sweep`` uses) draws runs whose names differ only by ``seed=N``
as one line: their round-by-round mean (accuracies, bytes, seconds), labelled with the number of
seeds; the tables keep one row per run.

Bytes are decimal (1 KB = 1000 bytes). Uses matplotlib's Agg canvas directly (no pyplot, no global
backend switch), so it is safe to call from servers, tests and notebooks.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from fedfit.format import human_bytes, markdown_table, pct
from fedfit.results import RoundRecord, Run, read_run

CONFIG_COLUMNS = ("dataset", "strategy", "method", "codec_up", "codec_down", "shots",
                  "classes_per_client", "num_clients", "clients_per_round")
_CONTEXT = {  # config key -> how the titles say it
    "dataset": "{}",
    "shots": "{}-shot",
    "classes_per_client": "{} classes/client",
    "num_clients": "{} clients",
    "clients_per_round": "{} per round",
}
_STYLE = {
    "figure.figsize": (8, 5), "axes.grid": True, "grid.alpha": 0.3, "axes.titlesize": 11,
    "axes.labelsize": 10, "legend.fontsize": 8, "svg.fonttype": "none", "axes.spines.top": False,
    "axes.spines.right": False,
}
_LEGEND_INSIDE_MAX = 5  # more runs than this: legend outside the axes, on the right
_BANDS_MAX = 6          # more runs than this: no spread bands (they would hide each other)


def config_value(config: dict[str, Any], key: str) -> Any:
    """``config[key]``, else the first ``key`` found in nested sections (breadth first), else None."""
    queue = [config]
    while queue:
        d = queue.pop(0)
        if key in d and not isinstance(d[key], (dict, list)):
            return d[key]
        queue += [v for v in d.values() if isinstance(v, dict)]
    return None


@dataclass
class RunSummary:
    """One run, reduced to what the plots and tables need."""

    run: Run
    label: str
    final: RoundRecord | None   # last record with acc_mean
    global_acc: float | None    # last non-None global_acc
    total_wire: int             # bytes, down + up, whole run
    totals: dict[str, int]      # bytes_{down,up}_{wire,payload} summed over rounds
    seconds: float

    @classmethod
    def of(cls, run: Run, label: str) -> "RunSummary":
        rs = run.rounds
        with_acc = [r for r in rs if r.acc_mean is not None]
        globals_ = [r.global_acc for r in rs if r.global_acc is not None]
        keys = ("bytes_down_wire", "bytes_up_wire", "bytes_down_payload", "bytes_up_payload")
        totals = {k: int(sum(getattr(r, k) for r in rs)) for k in keys}
        wire = rs[-1].cum_bytes_wire or totals["bytes_down_wire"] + totals["bytes_up_wire"]
        return cls(run, label, with_acc[-1] if with_acc else None, globals_[-1] if globals_ else None,
                   int(wire), totals, float(sum(r.seconds for r in rs)))

    @property
    def rounds(self) -> int:
        return max(r.round for r in self.run.rounds)


def load_runs(run_dirs: list[str | Path]) -> list[RunSummary]:
    """Read run directories; ValueError for none given or a run without round records."""
    if not run_dirs:
        raise ValueError("plot_runs: no run directories given")
    runs = [read_run(d) for d in run_dirs]
    for run in runs:
        if not run.rounds:
            raise ValueError(f"{run.dir}: run has no round records (empty rounds.jsonl); nothing to plot")
    names = [r.name for r in runs]
    labels = [n if names.count(n) == 1 else f"{n} ({r.dir.name})" for n, r in zip(names, runs)]
    return [RunSummary.of(r, lab) for r, lab in zip(runs, labels)]


_SEED = re.compile(r"(^|_)seed=-?\d+(?=_|$)")
_MEANS = [f.name for f in fields(RoundRecord) if f.type in ("int", "float", "float | None") and f.name != "round"]


def seed_group(name: str) -> str:
    """The run name without its ``seed=N`` part: 'adapter=film_seed=2' -> 'adapter=film'."""
    return _SEED.sub("", name).strip("_") or "run"


def merge_seeds(runs: list[RunSummary]) -> list[RunSummary]:
    """One RunSummary per group of runs whose names differ only by ``seed=N`` (first-seen order):
    every numeric field of every round is the mean over the runs that have that round (None where
    none has a value); a group of one run is returned as it is."""
    groups: dict[str, list[RunSummary]] = {}
    for s in runs:
        groups.setdefault(seed_group(s.run.name), []).append(s)
    out = []
    for name, members in groups.items():
        if len(members) == 1:
            out.append(members[0])
            continue
        rounds = []
        for i in range(min(len(m.run.rounds) for m in members)):
            recs = [m.run.rounds[i] for m in members]
            means = {}
            for key in _MEANS:
                vals = [getattr(r, key) for r in recs if getattr(r, key) is not None]
                mean = sum(vals) / len(vals) if vals else None
                means[key] = round(mean) if mean is not None and isinstance(getattr(recs[0], key), int) else mean
            rounds.append(replace(recs[0], **means, per_client={}, failures=[], trained=[]))
        first = members[0].run
        run = Run(first.dir, {**first.config, "name": name}, rounds)
        out.append(RunSummary.of(run, f"{name} (mean of {len(members)} seeds)"))
    return out


def context_line(runs: list[RunSummary]) -> str:
    """'cifar100 · 5-shot · 100 clients' from config keys shared by all runs (varying ones joined by '/')."""
    parts = []
    for key, fmt in _CONTEXT.items():
        values = [config_value(s.run.config, key) for s in runs]
        present = list(dict.fromkeys(str(v) for v in values if v is not None))
        if 0 < len(present) <= 3:
            parts.append(fmt.format("/".join(present)))
    return " · ".join(parts)


def plot_runs(run_dirs: list[str | Path], out_dir: str | Path, title: str | None = None,
              merge_seeds: bool = False, references: dict[str, float] | None = None) -> list[Path]:
    """Write the figures (PNG + SVG) and tables described in the module docstring; return their paths.
    ``references``: label -> a personalized accuracy (fraction) drawn as a level across the accuracy figures
    (e.g. the bounds); None: the frozen head's (round 0) when every run starts from the same one."""
    per_run = load_runs(run_dirs)
    runs = _merge(per_run) if merge_seeds else per_run
    refs = frozen_head(per_run) if references is None else references
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    context = context_line(runs)
    colors = _colors(len(runs))
    written: list[Path] = []
    with matplotlib.rc_context(_STYLE):
        for stem, draw, what in [
            ("accuracy_vs_round", _accuracy_vs_round, "Personalized accuracy vs round"),
            ("accuracy_vs_bytes", _accuracy_vs_bytes, "Personalized accuracy vs communication"),
            ("pareto", _pareto, "Final accuracy vs total communication"),
            *([("accuracy_vs_time", _accuracy_vs_time, "Personalized accuracy vs simulated time")]
              if any(_timed(s) for s in runs) else []),
        ]:
            fig = Figure()
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            extra_handles = draw(ax, runs, colors)
            if stem in ("accuracy_vs_round", "accuracy_vs_bytes", "accuracy_vs_time"):
                extra_handles += _references(ax, refs)
            heading = f"{title}: {what}" if title else what
            ax.set_title(heading + (f"\n{context}" if context else ""))
            _legend(ax, runs, colors, extra_handles, points=stem == "pareto")
            for ext in ("png", "svg"):
                path = out / f"{stem}.{ext}"
                fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
                written.append(path)
    written += write_tables(per_run, out)
    return written


_merge = merge_seeds  # plot_runs' keyword of the same name hides the function


def frozen_head(runs: list[RunSummary]) -> dict[str, float]:
    """{"frozen head (round 0)": accuracy} when every run's round 0 has the same personalized accuracy (the
    same clients under the frozen backbone), else {}."""
    first = {r.run.rounds[0].acc_mean for r in runs if r.run.rounds and r.run.rounds[0].round == 0}
    first.discard(None)
    return {"frozen head (round 0)": first.pop()} if len(first) == 1 else {}


_REFERENCE_STYLES = [dict(color="0.5", ls="-."), dict(color="#b2182b", ls=(0, (6, 3))),
                     dict(color="#2166ac", ls=(0, (6, 3))), dict(color="#1b7837", ls="-.")]


def _references(ax, refs: dict[str, float]) -> list:
    """Levels across the axes for ``refs`` (label -> fraction); their legend handles."""
    handles = []
    for (label, value), style in zip(refs.items(), _REFERENCE_STYLES):
        ax.axhline(100 * value, lw=1.0, zorder=1, **style)
        handles.append(Line2D([], [], lw=1.0, label=f"{label}: {100 * value:.1f}%", **style))
    return handles


# ------------------------------------------------------------------------------------- figures
def _colors(n: int) -> list:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _marker(n_points: int) -> dict[str, Any]:
    return {"marker": "o", "markersize": 3} if n_points <= 30 else {}


def _series(rounds: list[RoundRecord], x: str, *ys: str) -> list[list[float]]:
    """Columns [x, *ys] over the records where every y is present."""
    rows = [(getattr(r, x), *(getattr(r, y) for y in ys)) for r in rounds
            if all(getattr(r, y) is not None for y in ys)]
    return [list(c) for c in zip(*rows)] if rows else [[] for _ in (x, *ys)]


def _pct(values: list[float]) -> list[float]:
    return [100 * v for v in values]


def _band(rs: list[RoundRecord]) -> tuple[str, list, list, list] | None:
    """(kind, rounds, low, high) of the spread band: 10th percentile to median, else mean +- std."""
    x, lo, hi = _series(rs, "round", "acc_p10", "acc_median")
    if x:
        return "band: 10th percentile to median", x, lo, hi
    x, m, sd = _series(rs, "round", "acc_mean", "acc_std")
    if x:
        return "band: mean ± 1 std", x, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)]
    return None


def _accuracy_vs_round(ax, runs: list[RunSummary], colors) -> list:
    bands, has_global, has_new = [], False, False
    for s, c in zip(runs, colors):
        rs = s.run.rounds
        x, mean = _series(rs, "round", "acc_mean")
        ax.plot(x, _pct(mean), color=c, lw=1.6, **_marker(len(x)))
        band = _band(rs) if len(runs) <= _BANDS_MAX else None
        if band:
            kind, bx, lo, hi = band
            bands.append(kind)
            ax.fill_between(bx, _pct(lo), _pct(hi), color=c, alpha=0.12, lw=0)
        gx, g = _series(rs, "round", "global_acc")
        if gx:
            has_global = True
            ax.plot(gx, _pct(g), color=c, lw=1.2, ls="--", alpha=0.9)
        nx, nu = _series(rs, "round", "new_acc_mean")
        if nx:
            has_new = True
            ax.plot(nx, _pct(nu), color=c, lw=1.4, ls=":", alpha=0.95)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color="0.3", lw=1.6, label="personalized (mean over clients)")]
    if has_new:
        handles.append(Line2D([], [], color="0.3", lw=1.4, ls=":", label="new users (never trained)"))
    if has_global:
        handles.append(Line2D([], [], color="0.3", lw=1.2, ls="--", label="global head"))
    handles += [Patch(color="0.3", alpha=0.2, label=kind) for kind in dict.fromkeys(bands)]
    return handles


def _bytes_axis(ax, label: str) -> None:
    """Log x axis in human byte units; labels at 1-2-5 steps when it spans less than two decades."""
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if hi < 100 * lo else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)


def _accuracy_vs_bytes(ax, runs: list[RunSummary], colors) -> list:
    for s, c in zip(runs, colors):
        x, y = _series(s.run.rounds, "cum_bytes_wire", "acc_mean")
        pts = [(b, a) for b, a in zip(x, y) if b > 0]  # log axis: rounds before any traffic are skipped
        if pts:
            ax.plot([b for b, _ in pts], _pct([a for _, a in pts]), color=c, lw=1.6, **_marker(len(pts)))
        elif y:  # nothing ever sent (local-only, head-only): its final accuracy as a level across the axis
            ax.axhline(100 * y[-1], color=c, lw=1.2, ls="--")
    _bytes_axis(ax, "cumulative bytes on the wire, down + up (decimal units, log scale)")
    ax.set_ylabel("personalized accuracy, mean over clients (%)")
    return []


def _timed(s: RunSummary) -> bool:
    return any((r.sim_total_s or 0) > 0 for r in s.run.rounds)


def _accuracy_vs_time(ax, runs: list[RunSummary], colors) -> list:
    """Accuracy against the simulated clock (``fedfit.clock``: devices, bandwidths, deadlines), in seconds."""
    for s, c in zip(runs, colors):
        if not _timed(s):
            continue
        x, y = _series(s.run.rounds, "sim_total_s", "acc_mean")
        ax.plot(x, _pct(y), color=c, lw=1.6, **_marker(len(x)))
    ax.set_xlabel("simulated seconds (training exchanges on the run's devices and networks)")
    ax.set_ylabel("personalized accuracy, mean over clients (%)")
    return []


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, value) that no other point beats (cost <=, value >=, one strictly),
    ordered by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _pareto(ax, runs: list[RunSummary], colors) -> list:
    idx = [i for i, s in enumerate(runs) if s.final is not None and s.total_wire > 0]
    points = [(runs[i].total_wire, 100 * runs[i].final.acc_mean) for i in idx]
    front = {idx[j] for j in pareto_front(points)}
    for i, (b, a) in zip(idx, points):
        on = i in front
        ax.scatter([b], [a], s=60 if on else 35, color=colors[i], edgecolors="black" if on else "none",
                   alpha=1 if on else 0.6, zorder=3)
        if on:
            ax.annotate(runs[i].label, (b, a), xytext=(6, 6), textcoords="offset points", fontsize=8)
    fx, fy = zip(*sorted(p for i, p in zip(idx, points) if i in front)) if front else ((), ())
    ax.plot(fx, fy, color="0.2", lw=1, ls="-", zorder=2)
    if not points:
        ax.text(0.5, 0.5, "no run has both accuracy and byte counts", ha="center", transform=ax.transAxes)
    _bytes_axis(ax, "total bytes on the wire, down + up (decimal units, log scale)")
    ax.set_ylabel("final personalized accuracy, mean over clients (%)")
    ax.margins(x=0.15, y=0.1)
    return [Line2D([], [], color="0.2", lw=1, marker="o", markeredgecolor="black", markerfacecolor="white",
                   label="Pareto front (fewer bytes, higher accuracy)")]


def _legend(ax, runs: list[RunSummary], colors, extra: list, points: bool = False) -> None:
    style = {"ls": "", "marker": "o"} if points else {"lw": 2}
    handles = [Line2D([], [], color=c, label=s.label, **style) for s, c in zip(runs, colors)] + extra
    if len(runs) <= _LEGEND_INSIDE_MAX:
        ax.legend(handles=handles, loc="best", framealpha=0.85)
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0,
                  ncols=1 if len(handles) <= 24 else 2, frameon=False)


# -------------------------------------------------------------------------------------- tables
def table_rows(runs: list[RunSummary]) -> list[dict[str, Any]]:
    """One dict per run: name, config columns present in any run, rounds, final accuracies
    (fractions), byte totals (bytes), seconds, dir."""
    config_cols = [k for k in CONFIG_COLUMNS if any(config_value(s.run.config, k) is not None for s in runs)]
    rows = []
    for s in runs:
        f = s.final
        row = {"name": s.label}
        row.update({k: config_value(s.run.config, k) for k in config_cols})
        row.update({
            "rounds": s.rounds,
            **{k: None if f is None else getattr(f, k) for k in ("acc_mean", "acc_median", "acc_p10", "new_acc_mean")},
            "global_acc": s.global_acc,
            **s.totals, "bytes_wire": s.total_wire, "seconds": round(s.seconds, 3),
            "sim_seconds": None if f is None or f.sim_total_s is None else round(f.sim_total_s, 3),
            "dir": str(s.run.dir),
        })
        rows.append(row)
    return rows


def write_tables(runs: list[RunSummary], out_dir: Path) -> list[Path]:
    """Write runs.csv (raw values, empty = missing) and runs.md (percent, human bytes)."""
    rows = table_rows(runs)
    cols = list(rows[0])
    csv_path, md_path = out_dir / "runs.csv", out_dir / "runs.md"
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    md_cols = [c for c in cols if c != "dir"]
    md_path.write_text(markdown_table(md_cols, [[_md_cell(c, r[c]) for c in md_cols] for r in rows]) + "\n")
    return [csv_path, md_path]


def _md_cell(col: str, v: Any) -> str:
    if v is None:
        return "–"
    if col.startswith("acc") or col in ("global_acc", "new_acc_mean"):
        return pct(v) + "%"
    if col.startswith("bytes"):
        return human_bytes(v)
    if col == "seconds":
        return f"{v:.1f} s"
    if col == "sim_seconds":
        return f"{v:.1f} s"
    return str(v).replace("|", "\\|")


# ------------------------------------------------------------------------------------ partition
def plot_partition(plans: list, class_names: list[str], path: str | Path, num_clients: int,
                   title: str | None = None) -> list[Path]:
    """The partition as a figure (PNG + SVG beside ``path``): one stacked bar per client of its support
    images per class (colour = class), new users (ids >= ``num_clients``) after a dashed line; returns
    the files written. ``plans``: ``fedfit.data.ClientPlan`` list (global class ids in ``classes``)."""
    import numpy as np

    n_cls = len(class_names)
    counts = np.zeros((len(plans), n_cls), dtype=int)
    for i, p in enumerate(plans):
        local = np.bincount(np.asarray(p.support_y), minlength=len(p.classes))
        counts[i, np.asarray(p.classes)] = local[:len(p.classes)]
    cmap = matplotlib.colormaps["tab10" if n_cls <= 10 else "tab20"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context({**_STYLE, "figure.figsize": (max(6.0, 0.16 * len(plans) + 2), 4.5)}):
        fig = Figure()
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        bottom = np.zeros(len(plans))
        x = np.arange(len(plans))
        for c in range(n_cls):
            if counts[:, c].any():
                ax.bar(x, counts[:, c], bottom=bottom, width=0.85, color=cmap(c % cmap.N),
                       label=class_names[c] if n_cls <= 20 else None)
                bottom += counts[:, c]
        if num_clients < len(plans):
            ax.axvline(num_clients - 0.5, color="0.3", ls="--", lw=1)
            ax.text(num_clients - 0.3, bottom.max() * 0.97, "new users", fontsize=8, va="top")
        per = (counts > 0).sum(1)
        ax.set_xlabel(f"client (partition id); classes per client: mean {per.mean():.1f}, "
                      f"min {per.min()}, max {per.max()}")
        ax.set_ylabel("support images")
        ax.set_title(title or "Partition: support images per class per client")
        if n_cls <= 20:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=7)
        for ext in ("png", "svg"):
            out = path.with_suffix(f".{ext}")
            fig.savefig(out, dpi=150, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
            written.append(out)
    return written
