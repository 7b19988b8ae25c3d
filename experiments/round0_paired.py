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

from fedfit.paired import change
from fedfit.results import read_rounds


def paired(first: dict, last: dict, parts: list[str]) -> str:
    d = np.array([last[p]["accuracy"] - first[p]["accuracy"] for p in parts]) * 100
    loss = np.mean([last[p]["eval_loss"] - first[p]["eval_loss"] for p in parts])
    ch = change(d)
    t = f"{ch.t:+.1f}" if ch.se > 0 else "n/a"
    return (f"{ch.n:>3} clients: {ch} points (t = {t}), "
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
        r, c = change(per_run), change(per_client)
        print(f"pooled over {r.n} runs: last - round 0 = {r} points (mean +- SE over runs, t = {r.t:+.1f}); runs at "
              f"or above round 0: {int((np.array(per_run) >= -1e-9).sum())} of {r.n}; all {c.n} training clients: "
              f"{c} (t = {c.t:+.1f})")


if __name__ == "__main__":
    main(sys.argv[1:])
