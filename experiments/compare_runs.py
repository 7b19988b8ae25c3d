"""Are two runs the same run? Compares the rounds.jsonl of two run directories (or of every run in two
folders of runs, matched by their path below the folder) field by field, wall-clock fields left out, and
their final_state.npz array by array; prints one line per run and, where they differ, the first
difference. Exit status 0 when every run is identical, 1 otherwise (a difference, a run on one side only,
a missing rounds.jsonl).

Wall-clock fields, left out at any depth: ``seconds`` and every ``*_seconds`` but the simulated clock's
(``sim_seconds``; ``sim_s`` and ``sim_total_s`` are simulated too, and compared). Everything else must be
equal, floats to the bit (NaN equal to NaN).

    .venv/bin/python experiments/compare_runs.py RUN_A RUN_B
    .venv/bin/python experiments/compare_runs.py runs/before runs/after
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROUNDS = "rounds.jsonl"


def wall_clock(key: str) -> bool:
    """Whether a record field holds wall-clock time (left out of the comparison)."""
    return key == "seconds" or (key.endswith("_seconds") and not key.startswith("sim_"))


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where ``a`` and ``b`` (parsed JSON) first differ, wall-clock fields left out: 'path: a != b', or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys_a = [k for k in a if not wall_clock(k)]
        keys_b = [k for k in b if not wall_clock(k)]
        for k in keys_a:
            if k not in b:
                return f"{path}{k}: only in the first"
            d = first_difference(a[k], b[k], f"{path}{k}.")
            if d:
                return d
        extra = [k for k in keys_b if k not in a]
        return f"{path}{extra[0]}: only in the second" if extra else None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}{i}.")
            if d:
                return d
        return None if len(a) == len(b) else f"{path.rstrip('.')}: {len(a)} != {len(b)} items"
    same = a == b and type(a) is type(b) or (isinstance(a, float) and isinstance(b, float)
                                             and math.isnan(a) and math.isnan(b))
    return None if same else f"{path.rstrip('.')}: {a!r} != {b!r}"


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / ROUNDS).read_text().splitlines() if line.strip()]


def compare_run(a: Path, b: Path) -> str | None:
    """None when runs ``a`` and ``b`` are identical (see module docstring), else their first difference."""
    for run in (a, b):
        if not (run / ROUNDS).is_file():
            return f"{run / ROUNDS}: missing"
    ra, rb = _records(a), _records(b)
    for x, y in zip(ra, rb):
        d = first_difference(x, y)
        if d:
            return f"round {x.get('round')}: {d}"
    if len(ra) != len(rb):
        return f"{len(ra)} rounds != {len(rb)} rounds"
    sa, sb = a / "final_state.npz", b / "final_state.npz"
    if sa.is_file() != sb.is_file():
        return f"final_state.npz only in {'the first' if sa.is_file() else 'the second'}"
    if sa.is_file():
        with np.load(sa) as x, np.load(sb) as y:
            if sorted(x) != sorted(y):
                return f"final_state.npz: arrays {sorted(x)} != {sorted(y)}"
            for k in sorted(x):
                if x[k].shape != y[k].shape or x[k].dtype != y[k].dtype or x[k].tobytes() != y[k].tobytes():
                    return f"final_state.npz: array {k} differs"
    return None


def runs_below(folder: Path) -> list[Path]:
    """The run directories below ``folder`` (those holding a rounds.jsonl), as paths relative to it."""
    return sorted(p.parent.relative_to(folder) for p in folder.rglob(ROUNDS))


def compare(a: Path, b: Path, out=print) -> int:
    """Compare two runs, or two folders of runs; print one line each; 0 when all are identical, else 1."""
    if (a / ROUNDS).is_file() or (b / ROUNDS).is_file():
        pairs = {Path("."): (a, b)}
    else:
        names = sorted(set(runs_below(a)) | set(runs_below(b)))
        if not names:
            out(f"no run (a folder holding {ROUNDS}) below {a} or {b}")
            return 1
        pairs = {n: (a / n, b / n) for n in names}
    bad = 0
    for name, (x, y) in pairs.items():
        d = compare_run(x, y)
        n = len(_records(x)) if d is None else 0
        out(f"{name}: " + (f"identical ({n} rounds, wall-clock fields left out)" if d is None else f"DIFFERENT: {d}"))
        bad += d is not None
    out(f"{len(pairs) - bad} of {len(pairs)} runs identical")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path, help="a run directory, or a folder of runs")
    p.add_argument("second", type=Path, help="the same, to compare with")
    args = p.parse_args(argv)
    return compare(args.first, args.second)


if __name__ == "__main__":
    sys.exit(main())
