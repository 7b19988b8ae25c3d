"""Is a run's last round really below (or above) its round 0? The per-client paired difference.

    python experiments/round0_paired.py RUN_DIR [RUN_DIR ...]

For each run (its rounds.jsonl): every evaluated client's personalized accuracy in the last round
minus its own accuracy in round 0 (same client, same query images), as the mean over clients, its
standard error (std / sqrt(clients)) and t = mean / SE, with how many clients went down / stayed / went
up, and the change of the mean evaluation loss. Training clients and new users (who never train) are
reported apart. A mean difference within about 2 SE of zero is what query noise alone gives; README's
stability notes quote this script. With several runs (seeds) it ends with the pooled view: per run the
last - round 0 mean (its mean +- SE over runs, how many runs end at or above round 0), and every
training client of every run as one paired sample.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fedfit.results import read_rounds


def paired(first: dict, last: dict, parts: list[str]) -> str:
    d = np.array([last[p]["accuracy"] - first[p]["accuracy"] for p in parts]) * 100
    loss = np.mean([last[p]["eval_loss"] - first[p]["eval_loss"] for p in parts])
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    t = f"{d.mean() / se:+.1f}" if se > 0 else "n/a"
    return (f"{len(d):>3} clients: {d.mean():+.2f} +- {se:.2f} points (t = {t}), "
            f"down / same / up {int((d < 0).sum())} / {int((d == 0).sum())} / {int((d > 0).sum())}, "
            f"eval loss {loss:+.3f}")


def main(dirs: list[str]) -> None:
    per_run, per_client = [], []
    for run in dirs:
        rows = read_rounds(run)
        cfg = json.loads((Path(run) / "config.json").read_text())
        first, last = rows[0]["per_client"], rows[-1]["per_client"]
        parts = sorted(set(first) & set(last), key=int)
        train = [p for p in parts if int(p) < cfg["num_clients"]]
        new = [p for p in parts if int(p) >= cfg["num_clients"]]
        print(f"{Path(run).name}: round 0 -> {rows[-1]['round']}")
        print(f"  training clients {paired(first, last, train)}")
        d = [100 * (last[p]["accuracy"] - first[p]["accuracy"]) for p in train]
        per_client += d
        per_run.append(100 * (rows[-1]["acc_mean"] - rows[0]["acc_mean"]))
        if new:
            print(f"  new users        {paired(first, last, new)}")
    if len(per_run) > 1:
        r, c = np.array(per_run), np.array(per_client)
        se_r, se_c = r.std(ddof=1) / np.sqrt(len(r)), c.std(ddof=1) / np.sqrt(len(c))
        print(f"pooled over {len(r)} runs: last - round 0 = {r.mean():+.2f} +- {se_r:.2f} points (mean +- SE over "
              f"runs, t = {r.mean() / se_r:+.1f}); runs at or above round 0: {int((r >= -1e-9).sum())} of {len(r)}; "
              f"all {len(c)} training clients: {c.mean():+.2f} +- {se_c:.2f} (t = {c.mean() / se_c:+.1f})")


if __name__ == "__main__":
    main(sys.argv[1:])
