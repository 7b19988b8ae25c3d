"""Sweeps: a named set of runs from one TOML file, resumable, with seed-aggregated tables.

An experiment file (``experiments/NAME.toml``)::

    name = "methods"            # optional; default: the file name
    description = "..."         # optional: one line, the title's subtitle on its results page (--docs)
    notes = '''...'''           # optional: what the results mean (Markdown), on its results page; or a
                                # Markdown file NAME.md beside NAME.toml
    [base]                      # options shared by every run (see fedfit/defaults.toml)
    rounds = 10
    [grid]                      # every combination of these values is one run
    method = ["fit", "head-only"]
    seed = [0, 1, 2]
    [[run]]                     # optional extra runs: base + these options (+ the grid's seeds; a grid
                                # of seeds only makes no runs of its own beside [[run]]s)
    method = "full"
    name = "full"               # optional: the run's (group's) name instead of its options
    [bounds]                    # optional: a table placing every group between two of them
    lower = "method=local-only" # group names (a run's name without "_seed=N")
    upper = "method=centralized"
    oracle = "fit-oracle"       # optional: a second upper bound (FiT's oracle), its own columns
    [bounds.groups]             # optional: groups placed between bounds run with their own switches
    fit-faithful = { lower = "lower-faithful", upper = "upper-faithful", oracle = "oracle-faithful" }
    stability = true            # optional: a table of final vs round-0 vs best-round accuracy per run
    target = 0.75               # optional: a table of simulated time and bytes until the personalized
                                # accuracy first reaches this fraction (fedfit.clock), and its figure

Runs go to ``<out_dir>/<sweep name>/<run name>/``; a run whose ``summary.json`` exists, there or in its
record (``fedfit.app.records``), is not run again, so an interrupted sweep resumes where it stopped (its
line says so when it was made with an option other than the file now gives it). ``aggregate`` groups runs
that differ only by seed: final accuracy mean and spread (std across seeds), bytes per client-round; ``bounds_table``
pairs every group with the bounds seed by seed; ``stability_table`` checks each run's last round;
``target_table`` times each group to a target accuracy on the simulated clock.
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fedfit import format as fmt
from fedfit import paired
from fedfit.config import ConfigError, load_config, merge, parse_overrides, validate
from fedfit.results import read_rounds

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


SECTIONS = ("name", "description", "notes", "base", "grid", "run", "bounds", "stability", "target")


def load_spec(path: str | Path) -> dict[str, Any]:
    """The experiment file's TOML (ConfigError when missing, malformed or with unknown sections)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"experiment file {p} does not exist")
    try:
        spec = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    unknown = set(spec) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{p}: unknown sections {sorted(unknown)} (use {', '.join(SECTIONS)})")
    bounds = spec.get("bounds", {})
    if bounds:
        check_bounds(bounds, p)
    for key in ("name", "description", "notes"):
        if not isinstance(spec.get(key, ""), str):
            raise ConfigError(f"{p}: {key} must be a string, got {spec[key]!r}")
    target = spec.get("target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1):
        raise ConfigError(f"{p}: target is an accuracy as a fraction in (0, 1], got {target!r}")
    return spec


BOUND_KEYS = ("lower", "upper", "oracle")  # lower and upper required; oracle: a second upper bound (optional)


def check_bounds(bounds: dict[str, Any], where: Path) -> None:
    """``[bounds]``: ``lower`` / ``upper`` (/ ``oracle``) group names, and ``[bounds.groups]``: per group other
    bounds (the bounds run with that group's own switches); ConfigError naming the file otherwise."""
    def names(b: dict[str, Any], what: str) -> None:
        keys = set(b)
        if not {"lower", "upper"} <= keys or keys - set(BOUND_KEYS) or not all(isinstance(v, str) for v in b.values()):
            raise ConfigError(f"{where}: {what} needs lower = \"GROUP\" and upper = \"GROUP\" (run names without "
                              f"seed), optionally oracle = \"GROUP\"; got {sorted(keys)}")

    groups = bounds.get("groups", {})
    names({k: v for k, v in bounds.items() if k != "groups"}, "[bounds]")
    if not isinstance(groups, dict):
        raise ConfigError(f"{where}: [bounds.groups] maps a group to its own bounds: GROUP = {{ lower = ..., upper = ... }}")
    for g, b in groups.items():
        if not isinstance(b, dict):
            raise ConfigError(f"{where}: [bounds.groups] {g} must be a table {{ lower = ..., upper = ... }}")
        names(b, f"[bounds.groups] {g}")


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(sweep name, resolved configs). Every run's config is validated before anything runs."""
    p = Path(path)
    spec = load_spec(p)
    name = spec.get("name") or p.stem
    base = merge(load_config(), spec.get("base", {}), f"{p} [base]")
    base = merge(base, parse_overrides(overrides or [], base), "overrides")
    grid = spec.get("grid", {})
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{p}: grid.{k} must be a non-empty list")
    keys = list(grid)
    extra = spec.get("run", [])
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))] or [{}]
    if extra and keys == ["seed"]:  # a grid of seeds beside [[run]]s only gives the runs their seeds
        combos = []
    seeds = grid.get("seed")
    for r in extra:
        combos += [{**r, "seed": s} for s in seeds] if seeds and "seed" not in r else [dict(r)]
    configs, names = [], set()
    for combo in combos:
        label = combo.pop("name", None)
        cfg = merge(base, combo, f"{p}")
        validate(cfg)
        varying = {k: v for k, v in combo.items()}
        if label:
            varying = {k: v for k, v in varying.items() if k == "seed"}
        cfg["name"] = "_".join([*([str(label)] if label else []),
                                *(f"{k}={v}" for k, v in sorted(varying.items()))]) or "run"
        cfg["out_dir"] = str(Path(base["out_dir"]) / name)
        cfg["tracker_group"] = cfg["tracker_group"] or f"{name}/{group_of(cfg['name'])}"  # trackers group by it
        if cfg["name"] in names:
            raise ConfigError(f"{p}: two runs would both be named {cfg['name']!r}")
        names.add(cfg["name"])
        configs.append(cfg)
    return name, configs


def run_dir(cfg: dict[str, Any]) -> Path:
    return Path(cfg["out_dir"]) / cfg["name"]


def _made_otherwise(results: Path, cfg: dict[str, Any]) -> str:
    """"" or, when the finished run in ``results`` was made with an option other than the sweep gives it now
    (its file was edited, or a default changed), what differs: its results stay in the tables as they were made."""
    from fedfit.results import RunFormatError, option_changed

    try:
        changed = option_changed(results, cfg)
    except RunFormatError as e:
        return f" - BUT {e}"
    if changed is None:
        return ""
    key, saved, now = changed
    return (f" - BUT was started with {key} = {saved!r}, not {now!r} as the sweep now says: its results are the old "
            f"ones (move {results} away to run it again)")


def run_sweep(configs: list[dict[str, Any]], run_fn: Callable[[dict[str, Any]], Any],
              progress: Callable[[str], None] = print, records: Path | None = None) -> list[str]:
    """Run every config not done yet (in order): done = finished in its run folder or, with ``records``,
    recorded there (``fedfit.app.records``). A run that fails is reported in one line and the
    sweep goes on (rerunning the sweep resumes or retries it); returns the names of the failed runs.
    Each run's line carries the sweep's ETA (the mean time of the runs this call ran, times those left);
    on a terminal the runs are also a live row (``fedfit.progress``)."""
    from fedfit import progress as live
    from fedfit.app.records import results_of

    failed = []
    todo = [c for c in configs if not results_of(c, records)]
    spent, ran = 0.0, 0
    with live.bar("sweep: runs", total=len(configs), completed=len(configs) - len(todo)) as row:
        for i, cfg in enumerate(configs, 1):
            results = results_of(cfg, records)
            if results is not None:
                how = "done before" if results == run_dir(cfg) else f"recorded in {results}"
                progress(f"[{i}/{len(configs)}] {cfg['name']}: {how}, skipped{_made_otherwise(results, cfg)}")
                continue
            left = len(todo) - ran  # this run and those after it that were not done before
            eta = f" (eta {live.duration(spent / ran * left)} for {left} left)" if ran else ""
            progress(f"[{i}/{len(configs)}] {cfg['name']}{eta}")
            t0 = time.perf_counter()
            try:
                run_fn(cfg)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one run's failure must not cost the others
                failed.append(cfg["name"])
                progress(f"[{i}/{len(configs)}] {cfg['name']}: FAILED: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}")
            spent, ran = spent + time.perf_counter() - t0, ran + 1
            row.advance()
    return failed


def group_of(name: str) -> str:
    """A run's group: its name without the ``seed=N`` part."""
    return "_".join(p for p in name.split("_") if not p.startswith("seed=")) or "run"


def _load(d: Path) -> dict[str, Any]:
    cfg = json.loads((d / "config.json").read_text())
    rounds = read_rounds(d)
    return {"cfg": cfg, "rounds": rounds, "summary": json.loads((d / "summary.json").read_text())}


def _finished(run_dirs: list[Path]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The finished runs of ``run_dirs`` (``_load``, in order) and the same grouped by ``group_of``."""
    runs = [_load(d) for d in run_dirs if (d / "summary.json").is_file()]
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(group_of(run["cfg"]["name"]), []).append(run)
    return runs, groups


def aggregate(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per group of runs differing only by seed: final accuracies (mean, std across seeds),
    round-0 accuracy, shared (sent) and personal (kept) numbers per client, training bytes per
    client-round (wire, up and down), total bytes, seconds per run and per training round (median)."""
    _, groups = _finished(run_dirs)
    rows = []
    for key, runs in groups.items():
        last = [r["rounds"][-1] for r in runs]
        first = [r["rounds"][0] for r in runs]
        trained = [x for r in runs for x in r["rounds"][1:] if x["clients"]]
        up = [x["bytes_up_wire"] / x["clients"] for x in trained]
        down = [x["bytes_down_wire"] / x["clients"] for x in trained]
        acc = np.array([x["acc_mean"] for x in last if x["acc_mean"] is not None], dtype=float)
        g = [x["global_acc"] for x in last if x.get("global_acc") is not None]
        new = [x["new_acc_mean"] for x in last if x.get("new_acc_mean") is not None]
        new0 = [x["new_acc_mean"] for x in first if x.get("new_acc_mean") is not None]
        rows.append({
            "group": key, "seeds": len(runs), "method": runs[0]["cfg"]["method"],
            "strategy": runs[0]["cfg"]["strategy"], "codec_up": runs[0]["cfg"]["codec_up"],
            "shots": runs[0]["cfg"]["shots"], "rounds": runs[0]["cfg"]["rounds"],
            "acc0": float(np.mean([x["acc_mean"] for x in first])),
            "acc": float(acc.mean()) if acc.size else None, "acc_std": float(acc.std()) if acc.size > 1 else 0.0,
            "acc_min": float(acc.min()) if acc.size else None, "acc_max": float(acc.max()) if acc.size else None,
            "global_acc": float(np.mean(g)) if g else None,
            "new_acc0": float(np.mean(new0)) if new0 else None, "new_acc": float(np.mean(new)) if new else None,
            "up_per_client_round": float(np.mean(up)) if up else 0.0,
            "down_per_client_round": float(np.mean(down)) if down else 0.0,
            "total_bytes": float(np.mean([x["cum_bytes_wire"] for x in last])),
            "seconds": float(np.mean([sum(x["seconds"] for x in r["rounds"]) for r in runs])),
            "s_per_round": float(np.median([x["seconds"] for x in trained])) if trained else None,
            "shared": runs[0]["summary"].get("shared_parameters", runs[0]["cfg"].get("state_size")),
            "personal": runs[0]["summary"].get("personal_parameters"),
            "eps": _mean_of(last, "dp_epsilon"), "eps_sampled": _mean_of(last, "dp_epsilon_sampled"),
        })
    return rows


def _mean_of(records: list[dict[str, Any]], key: str) -> float | None:
    vals = [x[key] for x in records if x.get(key) is not None]
    return float(np.mean(vals)) if vals else None


EPSILON_LABEL = "epsilon: add/remove one, no amplification"
EPSILON_SAMPLED_LABEL = "epsilon: replace one, k of n secret sample"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The ``aggregate`` rows as a Markdown table: parameter counts (numbers), accuracies in percent
    ('n/a' when missing), bytes in decimal units, seconds per training round (median) and per run; with
    DP runs, the epsilons after the last round (mean over seeds; the amplified one where any run has it)."""
    header = ["run", "seeds", "shared params", "personal / client", "round 0 acc (%)", "final acc (%)",
              "± std over seeds", "new users: round 0 (%)", "new users: final (%)", "global acc (%)",
              "uplink / client-round", "downlink / client-round", "total training bytes", "s / round", "s / run"]
    accs = ("acc0", "acc", "acc_std", "new_acc0", "new_acc", "global_acc")
    sizes = ("up_per_client_round", "down_per_client_round", "total_bytes")
    count = lambda n: "n/a" if n is None else f"{n:,}"  # noqa: E731
    cells = [[str(r["group"]), str(r["seeds"]), count(r.get("shared")), count(r.get("personal")),
              *(fmt.pct(r[k], "n/a") for k in accs), *(fmt.human_bytes(r[k]) for k in sizes),
              "n/a" if r.get("s_per_round") is None else f"{r['s_per_round']:.1f}", f"{r['seconds']:.0f}"]
             for r in rows]
    # DP runs: the epsilons at the run's delta, each of its own neighbour relation (strategies/dp.py); the
    # amplified one only where a run drew its sample secretly (dp_randomness = secret)
    for key, label in (("eps", EPSILON_LABEL), ("eps_sampled", EPSILON_SAMPLED_LABEL)):
        if any(r.get(key) is not None for r in rows):
            header.append(label)
            for c, r in zip(cells, rows):
                c.append("n/a" if r.get(key) is None else f"{r[key]:.3g}")
    if all(r.get("personal") is None for r in rows):  # not recorded by any run: no column of n/a
        header.pop(3)
        cells = [c[:3] + c[4:] for c in cells]
    return fmt.markdown_table(header, cells, "l" + "r" * (len(header) - 1))


def _per_seed(run_dirs: list[Path]) -> dict[str, dict[int, dict[str, Any]]]:
    """group -> seed -> the run's last round record (and its config), finished runs only."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for d in run_dirs:
        if (d / "summary.json").is_file():
            run = _load(d)
            out.setdefault(group_of(run["cfg"]["name"]), {})[int(run["cfg"]["seed"])] = {**run["rounds"][-1],
                                                                                         "cfg": run["cfg"]}
    return out


def _paired(a: dict[int, float | None], b: dict[int, float | None]) -> list[float]:
    """Per-seed differences a - b over the seeds both have a value for (seed order)."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b)) if a[s] is not None and b[s] is not None]


def _pm(values: list[float], signed: bool = False) -> str:
    """Percent mean +- std of fractions; signed: with a + for gains; 'n/a' when empty."""
    if not values:
        return "n/a"
    m, sd = 100 * float(np.mean(values)), 100 * float(np.std(values))
    return (f"{m:+.1f}" if signed else f"{m:.1f}") + (f" ± {sd:.1f}" if len(values) > 1 else "")


def bounds_table(run_dirs: list[Path], bounds: dict[str, Any]) -> str:
    """Every group between its bounds, seed by seed (``bounds``: the ``[bounds]`` table: ``lower``, ``upper``,
    optionally ``oracle`` (a second upper bound), and ``groups``: per group the bounds run with its own
    switches): personalized accuracy (training clients) and new users' (mean ± std over seeds), global
    accuracy, the paired difference to each bound (mean ± std of the per-seed differences), the share of
    the lower-to-upper gap closed (sum of the per-seed gains over the lower bound / sum of the per-seed
    gaps), training bytes per run; then the per-seed gaps of every set of bounds."""
    runs = _per_seed(run_dirs)
    default = {k: bounds[k] for k in BOUND_KEYS if k in bounds}
    own = bounds.get("groups", {})
    sets = [default]
    for b in own.values():  # each distinct set of bounds once (several groups may share one)
        if b not in sets:
            sets.append(b)
    pending = sorted({v for b in sets for v in b.values() if v not in runs})  # bounds with no finished run yet
    is_bound = {v for b in sets for v in b.values()}
    oracle = any("oracle" in b for b in sets)
    acc = {g: {s: r["acc_mean"] for s, r in by.items()} for g, by in runs.items()}

    def versus(g: str, b: dict[str, str], key: str) -> tuple[str, str]:
        """(paired difference to bound ``key``, gap closed between lower and it)."""
        if key not in b or b[key] not in runs:
            return "n/a", "n/a"
        up = b[key]
        if g == up:
            return "-", "-"
        diff = _pm(_paired(acc[g], acc[up]), True)
        if g == b["lower"]:
            return diff, "-"
        if b["lower"] not in runs:
            return diff, "n/a"
        low = _paired(acc[g], acc[b["lower"]])
        span = _paired({s: acc[up][s] for s in acc[g] if s in acc[up]}, acc[b["lower"]])
        ok = low and span and sum(span) > 0 and len(low) == len(span)
        return diff, f"{100 * sum(low) / sum(span):.0f}%" if ok else "n/a"

    header = ["run", "seeds", "personalized acc (%)", "bounds", "vs lower bound (paired)", "vs upper bound (paired)",
              "gap closed"] + (["vs oracle (paired)", "gap closed (oracle)"] if oracle else []) + \
             ["new users (%)", "global acc (%)", "training bytes / run"]
    rows = []
    for g, by in runs.items():
        b = own.get(g, default)
        vals = lambda k: [r[k] for r in by.values() if r.get(k) is not None]  # noqa: E731
        lower = "-" if g == b["lower"] else "n/a" if b["lower"] not in runs else \
            _pm(_paired(acc[g], acc[b["lower"]]), True)
        row = [g, str(len(by)), _pm(vals("acc_mean")), "own" if g in is_bound else f"{b['lower']} / {b['upper']}",
               lower, *versus(g, b, "upper")] + (list(versus(g, b, "oracle")) if oracle else [])
        rows.append(row + [_pm(vals("new_acc_mean")), _pm(vals("global_acc")),
                           fmt.human_bytes(float(np.mean(vals("cum_bytes_wire"))))])
    table = fmt.markdown_table(header, rows, "lr" + "r" * (len(header) - 2))
    lines = [f"Bounds not finished yet: {', '.join(pending)} (n/a where they are needed; run the sweep again)."] \
        if pending else []
    for b in sets:
        for key in ("upper", "oracle"):
            if key in b and b[key] in runs and b["lower"] in runs:
                gap = _paired(acc[b[key]], acc[b["lower"]])
                holds = "holds on every seed" if gap and min(gap) >= 0 else "does NOT hold on every seed"
                lines.append(f"{b[key]} minus {b['lower']}, per seed: " + " / ".join(f"{100 * x:+.1f}" for x in gap)
                             + f" points ({key} >= lower {holds}).")
    return table + "\n\n" + "\n".join(lines)


def bound_levels(run_dirs: list[Path], bounds: dict[str, Any]) -> dict[str, float]:
    """The default bounds' final personalized accuracy, mean over seeds: {"lower bound (NAME)": x, ...}, for
    the figures' reference levels (groups with bounds of their own are not drawn)."""
    runs = _per_seed(run_dirs)
    out = {}
    for key in BOUND_KEYS:
        g = bounds.get(key)
        vals = [r["acc_mean"] for r in runs.get(g, {}).values() if r.get("acc_mean") is not None]
        if vals:
            out[f"{'upper bound' if key == 'upper' else key + (' bound' if key == 'lower' else '')} ({g})"] = \
                float(np.mean(vals))
    return out


def stability_rows(run: dict[str, Any], key: str) -> tuple[float | None, float | None, float | None, int | None]:
    """(round 0, best, final, best round) of ``key`` over a run's evaluated rounds."""
    vals = [(r["round"], r.get(key)) for r in run["rounds"] if r.get(key) is not None]
    if not vals:
        return None, None, None, None
    best_round, best = max(vals, key=lambda x: x[1])
    return vals[0][1], best, vals[-1][1], best_round


STABLE_WITHIN = 0.01  # the last round must be within 1 point of the best round (and >= round 0)


def paired_diffs(run: dict[str, Any], key: str) -> np.ndarray | None:
    """The last evaluated round minus round 0 in points, paired: per training client for ``acc_mean``,
    per image for ``global_acc`` (runs that recorded the global head's answers); None where it cannot be
    paired."""
    evaluated = [r for r in run["rounds"] if r.get(key) is not None]
    if len(evaluated) < 2:
        return None
    first, last = evaluated[0], evaluated[-1]
    if key == "acc_mean":
        return paired.client_diffs(first.get("per_client") or {}, last.get("per_client") or {},
                                   run["cfg"]["num_clients"])
    return paired.image_diffs(first.get("global_answers"), last.get("global_answers"))


_KEYS = (("acc_mean", "clients"), ("global_acc", "images"))


def _paired_cell(ch: paired.Change | None, unit: str) -> str:
    return f"{ch} ({ch.n:,} {unit})" if ch is not None else "n/a"


def stability_table(run_dirs: list[Path]) -> str:
    """Per run: personalized and global accuracy at round 0, at the best round, at the last round; the
    last minus round 0 paired (mean +- SE, over training clients / over images) and the verdict: "yes"
    when the last is >= round 0 and within ``STABLE_WITHIN`` of the best, "noise" when it is within
    ``STABLE_WITHIN`` of the best but under round 0 by less than ``paired.NOISE_SE`` standard errors,
    else "NO". Then, per group of several seeds, one pooled row: round 0 and last as the mean over its
    seeds, the paired change over every client (image) of every seed, and its verdict ("yes" >= 0,
    "noise" within ``paired.NOISE_SE`` SE, else "NO")."""
    header = ["run", "personalized: round 0 / best (round) / final (%)", "last - round 0, paired (points)", "ok",
              "global: round 0 / best (round) / final (%)", "last - round 0, paired (points)", "ok"]
    rows = []
    finished, groups = _finished(run_dirs)
    for run in finished:
        cells = [run["cfg"]["name"]]
        for key, unit in _KEYS:
            r0, best, last, at = stability_rows(run, key)
            if r0 is None:
                cells += ["n/a", "", ""]
                continue
            diffs = paired_diffs(run, key)
            ch = paired.change(diffs) if diffs is not None else None
            near_best = last >= best - STABLE_WITHIN - 1e-9
            verdict = "yes" if near_best and last >= r0 - 1e-9 else \
                "noise" if near_best and ch is not None and ch.within_noise else "**NO**"
            cells += [f"{100 * r0:.1f} / {100 * best:.1f} ({at}) / {100 * last:.1f}", _paired_cell(ch, unit), verdict]
        rows.append(cells)
    for g, runs in groups.items():
        if len(runs) < 2:
            continue
        cells = [f"{g}: {len(runs)} seeds pooled"]
        for key, unit in _KEYS:
            ends = [stability_rows(r, key) for r in runs]
            if any(e[0] is None for e in ends):
                cells += ["n/a", "", ""]
                continue
            diffs = [paired_diffs(r, key) for r in runs]
            ch = paired.change(np.concatenate(diffs)) if all(d is not None for d in diffs) else None
            verdict = "n/a" if ch is None else "yes" if ch.mean >= -1e-9 else "noise" if ch.within_noise else "**NO**"
            cells += [f"{100 * np.mean([e[0] for e in ends]):.1f} / - / {100 * np.mean([e[2] for e in ends]):.1f}",
                      _paired_cell(ch, unit), verdict]
        rows.append(cells)
    return fmt.markdown_table(header, rows, "lrrlrrl")


def reach(rounds: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first round whose personalized accuracy is >= ``target``: its round, simulated seconds since
    the start and cumulative training bytes (wire); None when no round reaches it."""
    for r in rounds:
        if r.get("acc_mean") is not None and r["acc_mean"] >= target - 1e-9:
            return {"round": r["round"], "sim_s": r.get("sim_total_s"), "bytes": r["cum_bytes_wire"]}
    return None


def target_table(run_dirs: list[Path], target: float) -> str:
    """Per group: how many seeds reach ``target`` (personalized accuracy), and for those the simulated
    seconds, training bytes and rounds it took (mean ± std over the seeds that reach it); the final
    accuracy and the whole run's simulated seconds and bytes (mean over seeds)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in run_dirs:
        if (d / "summary.json").is_file():
            run = _load(d)
            groups.setdefault(group_of(run["cfg"]["name"]), []).append(run)

    def ms(values: list[float], unit: str, scale: float = 1.0) -> str:
        if not values:
            return "not reached"
        v = np.array(values, dtype=float) / scale
        if unit == "bytes":
            return fmt.human_bytes(float(v.mean())) + (f" ± {fmt.human_bytes(float(v.std()))}" if len(v) > 1 else "")
        return f"{v.mean():.1f}" + (f" ± {v.std():.1f}" if len(v) > 1 else "")

    header = ["run", f"seeds reaching {100 * target:.0f}%", "simulated seconds to target", "training bytes to target",
              "rounds to target", "final acc (%)", "simulated seconds / run", "training bytes / run"]
    rows = []
    for g, runs in groups.items():
        hits = [h for h in (reach(r["rounds"], target) for r in runs) if h is not None]
        timed = [h["sim_s"] for h in hits if h["sim_s"] is not None]
        last = [r["rounds"][-1] for r in runs]
        total = [x["sim_total_s"] for x in last if x.get("sim_total_s") is not None]
        rows.append([g, f"{len(hits)} of {len(runs)}", ms(timed, "s") if hits else "not reached",
                     ms([h["bytes"] for h in hits], "bytes"), ms([h["round"] for h in hits], "rounds"),
                     _pm([x["acc_mean"] for x in last if x.get("acc_mean") is not None]),
                     ms(total, "s") if total else "n/a",
                     fmt.human_bytes(float(np.mean([x["cum_bytes_wire"] for x in last])))])
    return fmt.markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def replace_section(text: str, marker: str, body: str) -> str:
    """Replace what stands between ``<!-- marker:start -->`` and ``<!-- marker:end -->``."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"markers {start} ... {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"

