"""The default federation's seconds per round: this checkout against an earlier commit, run alternately.

    python experiments/round_time_vs_commit.py --old 48fdc70 [--repeats 3] [--variant overlap_eval=false]
        [--out runs/round_time] [OPTION=VALUE ...]

Each variant runs ``fedfit simulate`` (the default options, plus any OPTION=VALUE given to all) from a
snapshot of its code (``git archive``: the old commit; this checkout's HEAD), one run at a time, the
order rotating every repeat (old, new, variant; new, variant, old; ...: the machine's speed drifts, so
adjacent runs compare and no variant always runs first). Per run
it reads rounds.jsonl: the wall seconds of all rounds (0..R) divided by R, the median of rounds
1..R-1 (a round's evaluation may hold the next round's training: ``overlap_eval``, so the first and
last rounds differ in kind) and the final accuracy (it must be equal: the same work). It prints one
table (medians over repeats, and each repeat's ratio old / new) over every run in ``OUT/results.jsonl``
(kept across invocations; ``--table-only`` prints it again).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snapshot(rev: str, into: Path) -> Path:
    """The tree of ``rev`` unpacked in ``into`` (no .git, no ignored files)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run(code: Path, out: Path, name: str, options: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "FEDFIT_PROGRESS": "plain"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fedfit.cli", "simulate", f"out_dir={out}", f"name={name}", *options],
                   cwd=code, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / name / "rounds.jsonl").read_text().splitlines() if line.strip()]
    last = rows[-1]["round"]
    secs = [r["seconds"] for r in rows]
    return {"name": name, "process_wall_s": wall, "rounds": last, "s_per_round_all": sum(secs) / last,
            "s_per_round_median_1_to_last_minus_1": statistics.median(secs[1:-1]),
            "final_acc": rows[-1].get("acc_mean"), "final_global_acc": rows[-1].get("global_acc")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the earlier commit")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", action="append", default=[], help="OPTION=VALUE run on this checkout too")
    ap.add_argument("--out", default=str(ROOT / "runs" / "round_time"))
    ap.add_argument("--table-only", action="store_true", help="only print the table of OUT/results.jsonl")
    ap.add_argument("--readme", default="", help="also write the table between README's round_time markers")
    ap.add_argument("options", nargs="*", help="OPTION=VALUE for every run")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.table_only:
        report(out, a.readme)
        return
    tmp = Path(tempfile.mkdtemp(prefix="round_time_"))
    try:
        old_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", a.old], check=True,
                                 capture_output=True, text=True).stdout.strip()
        new_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        old, new = snapshot(old_rev, tmp / "old"), snapshot(new_rev, tmp / "new")
        kinds = [("old", old, []), ("new", new, [])] + [(f"new {v}", new, [v]) for v in a.variant]
        batch = time.strftime("%Y%m%dT%H%M%S")
        with open(out / "results.jsonl", "a") as f:
            for rep in range(a.repeats):
                for label, code, extra in kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]:
                    name = f"{label.replace(' ', '_').replace('=', '-')}_rep{rep}"
                    r = {"variant": label, "old": old_rev, "new": new_rev, "batch": batch, "repeat": rep,
                         **run(code, tmp / "runs", name, [*a.options, *extra])}
                    f.write(json.dumps(r) + "\n")
                    f.flush()
                    print(f"{label:28s} rep {rep}: {r['s_per_round_all']:.2f} s/round (all rounds), median "
                          f"{r['s_per_round_median_1_to_last_minus_1']:.2f}, final acc {r['final_acc']:.4f}", flush=True)
        report(out, a.readme)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(out: Path, readme: str) -> None:
    """Print the table of every run in OUT/results.jsonl; with ``readme`` write it between its markers."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    text = table(rows, "old", "new")
    print(text)
    if readme:
        from fedfit.sweep import replace_section

        path = Path(readme)
        path.write_text(replace_section(path.read_text(), "results:round_time", text))


def table(results: list[dict], old: str, new: str) -> str:
    """Markdown: per variant the medians over repeats; per repeat old / new (>1: new is faster)."""
    olds_, news = (", ".join(dict.fromkeys(r[k] for r in results)) for k in ("old", "new"))
    lines = [f"Regenerate with `python experiments/round_time_vs_commit.py --old {olds_} --repeats 3 --variant "
             f"overlap_eval=false` (each run the default `fedfit simulate`; old = {olds_}, new = {news}; "
             f"{len(results)} runs, the order rotating).", "",
             "| code | s / round (all rounds / R) | s / round (median, rounds 1..R-1) | final acc (%) | "
             "old / this, per repeat (all rounds) |", "|---|---:|---:|---:|---|"]
    by = {}
    for r in results:
        by.setdefault(r["variant"], []).append(r)
    olds = {(r.get("batch"), r["repeat"]): r for r in by[old]}
    for label, rs in by.items():
        ratios = ", ".join(f"{olds[(r.get('batch'), r['repeat'])]['s_per_round_all'] / r['s_per_round_all']:.2f}"
                           for r in rs if (r.get("batch"), r["repeat"]) in olds) if label != old else ""
        lines.append(f"| {label} | {statistics.median(r['s_per_round_all'] for r in rs):.2f} | "
                     f"{statistics.median(r['s_per_round_median_1_to_last_minus_1'] for r in rs):.2f} | "
                     f"{100 * rs[0]['final_acc']:.1f} | {ratios} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
