"""Is a run's global accuracy really below (or above) its round 0? The paired change, image by image.

    python experiments/global_head_paired.py RUN_DIR [RUN_DIR ...]

Rebuilds the run's global head as the server does (``fedfit.global_head``: every training client's class
statistics of its support features, ONE head of the configured family over every class any training client
holds; without the robust strategies' filtering) under the run's initial state
(round 0) and under its ``final_state.npz`` (the last round), and scores both on the same images: the
training clients' query images, each once. Per run: both accuracies (they match rounds.jsonl's
``global_acc`` of round 0 and the last round when every training client was evaluated), the paired
change in points with its standard error (over images) and how many images were lost and gained, and
the change by how many training clients hold a class. FiLM-style adapters only (no personal state).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from fedfit.federated import head_name, initial_state, plans, shared_model, source
from fedfit.global_head import GlobalStatistics, client_statistics, needs_scatter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from round0_requery import _embed, _options, finished_runs  # noqa: E402  (the same options and embedding)


def paired(run: Path) -> None:
    cfg = _options(run)
    ps, data = plans(cfg), source(cfg)
    n = cfg["num_clients"]
    labels = np.asarray(data.labels)
    classes = np.unique(np.concatenate([p.classes for p in ps[:n]]))
    queries = np.unique(np.concatenate([p.query_idx for p in ps[:n]]))
    model = shared_model(cfg)
    layout, first = initial_state(cfg)
    final = np.load(run / "final_state.npz")
    name = head_name(cfg)
    scatter = needs_scatter(name)
    right = {}
    for state, flat in (("round 0", first), ("last", layout.pack({k: final[k] for k in final.files}))):
        arrays = layout.unpack(flat, copy=True)
        model.load_state_arrays(arrays)
        f = _embed(model, data.images)
        stats = GlobalStatistics(f.shape[1], scatter)
        for p in ps[:n]:
            stats.add(p.client_id, client_statistics(f[torch.as_tensor(p.support_idx)], p.support_y, p.classes, scatter))
        head = stats.head(name, arrays.get("head/e"), cfg["protonets_temperature"])  # as strategies.loop
        right[state] = (head.predict(f[torch.as_tensor(queries)]) == labels[queries]).astype(float)
    d = 100 * (right["last"] - right["round 0"])
    se = d.std(ddof=1) / np.sqrt(len(d))
    holders = {int(c): sum(int(c) in p.classes for p in ps[:n]) for c in classes}
    by = {}
    for img, c in zip(d, labels[queries]):
        by.setdefault(holders[int(c)], []).append(img)
    split = ", ".join(f"{k}: {np.mean(v):+.1f} ({len(v)} images)" for k, v in sorted(by.items()))
    print(f"{run.name}: global accuracy {100 * right['round 0'].mean():.1f}% -> {100 * right['last'].mean():.1f}% "
          f"on {len(d)} images x {len(classes)} classes; paired {d.mean():+.2f} +- {se:.2f} points "
          f"(t = {d.mean() / se:+.1f}), lost / gained {int((d < 0).sum())} / {int((d > 0).sum())}; "
          f"by training clients holding the class: {split}")


if __name__ == "__main__":
    for run in finished_runs(sys.argv[1:]):
        paired(run)
