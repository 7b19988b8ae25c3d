"""The last round against round 0 on every image no training client trained on, not only the run's own
queries (data sets without a test split, e.g. OpenClipart; FiLM-style adapters without personal state).

    python experiments/round0_requery.py RUN_DIR [RUN_DIR ...]

A run scores each client on ``queries`` images per class (10 by default: 50 per 5-class client), so a
seed's last-minus-round-0 change carries about a point of query noise. This script re-scores the same
clients, with the same support sets and heads, under the run's initial state (round 0) and its
``final_state.npz`` (the last round), on a larger query set: every image of the client's classes that
no training client ever trained on (the queries of every client, the new users' images and the images
no client holds; the support images of the training clients are the only ones left out, since the
shared adapter was trained on them). Each image is embedded once per state; per client the head is
built from its own support features exactly as in the run (``FewShotModel.head``).

Per run it prints the mean over the training clients of (last - round 0), in points, with its standard
error and t, first on the run's own queries (reproducing ``round0_paired.py``) and then on the larger
set, and how many query images a client got on average. With several runs: the same pooled over runs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from fedfit.config import defaults
from fedfit.federated import initial_state, plans, query_split, shared_model, source
from fedfit.results import read_rounds


def finished_runs(dirs: list[str]) -> list[Path]:
    """The folders among ``dirs`` that hold a finished run (config.json and final_state.npz); the others (a
    sweep's plots/, an interrupted run) are named on stderr and skipped, so ``runs/SWEEP/*`` works."""
    runs = [Path(d) for d in dirs if (Path(d) / "config.json").is_file() and (Path(d) / "final_state.npz").is_file()]
    for d in sorted(set(map(str, dirs)) - set(map(str, runs))):
        print(f"{d}: not a finished run (no config.json and final_state.npz), skipped", file=sys.stderr)
    if not runs:
        raise SystemExit("no finished run among the folders given")
    return runs


def _options(run: Path) -> dict:
    saved = json.loads((run / "config.json").read_text())
    cfg = {**defaults(), **{k: saved[k] for k in defaults() if k in saved}}  # options added later: defaults
    cfg["device"] = "cpu"
    if shared_model(cfg).adapter.has_personal_state:
        raise SystemExit(f"{run}: adapter {cfg['adapter']!r} keeps personal state; not supported here")
    if query_split(cfg) == "test":
        raise SystemExit(f"{run}: queries come from a test split there; use a larger queries= instead")
    return cfg


@torch.no_grad()
def _embed(model, images: np.ndarray) -> torch.Tensor:
    model.eval()
    return model.embed_images(images)


@torch.no_grad()
def _accuracy(model, feats: torch.Tensor, support: np.ndarray, support_y: np.ndarray, query: np.ndarray,
              query_y: np.ndarray) -> float:
    s, q = feats[torch.as_tensor(support)], feats[torch.as_tensor(query)]
    logits = model.head(s, torch.as_tensor(support_y), q, int(support_y.max()) + 1)
    return float((logits.argmax(1) == torch.as_tensor(query_y)).float().mean())


def requery(run: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(own-query changes, larger-set changes) per training client in points, and the mean query count."""
    cfg = _options(run)
    ps, data = plans(cfg), source(cfg)
    n = cfg["num_clients"]
    trained = np.unique(np.concatenate([p.support_idx for p in ps[:n]]))
    labels = np.asarray(data.labels)
    never = np.setdiff1d(np.arange(len(labels)), trained)      # images no training client trained on
    model = shared_model(cfg)
    layout, first = initial_state(cfg)
    final = np.load(run / "final_state.npz")
    last = layout.pack({k: final[k] for k in final.files})
    acc = {}  # state -> per client (own queries, every never-trained image)
    for name, flat in (("round0", first), ("last", last)):
        model.load_state_arrays(layout.unpack(flat, copy=True))  # the adapter and any head parameters
        feats = _embed(model, data.images)  # (N, D): every image once per state
        acc[name] = []
        for p in ps[:n]:
            local = {int(c): i for i, c in enumerate(p.classes)}
            big = never[np.isin(labels[never], p.classes)]
            big_y = np.array([local[int(c)] for c in labels[big]])
            acc[name].append((_accuracy(model, feats, p.support_idx, p.support_y, p.query_idx, p.query_y),
                              _accuracy(model, feats, p.support_idx, p.support_y, big, big_y), len(big)))
    a0, a1 = np.array(acc["round0"]), np.array(acc["last"])
    own, more, counts = 100 * (a1[:, 0] - a0[:, 0]), 100 * (a1[:, 1] - a0[:, 1]), a0[:, 2]
    return own, more, float(np.mean(counts))


def _line(d: np.ndarray) -> str:
    se = d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.2f} +- {se:.2f} (t = {d.mean() / se:+.1f}), down / up {int((d < 0).sum())} / {int((d > 0).sum())}"


def main(dirs: list[str]) -> None:
    runs = []
    for run in finished_runs(dirs):
        own, more, q = requery(run)
        rows = read_rounds(run)
        stored = 100 * (rows[-1]["acc_mean"] - rows[0]["acc_mean"])
        print(f"{run.name}: run's own queries {_line(own)} (rounds.jsonl: {stored:+.2f}); "
              f"every never-trained image ({q:.0f} per client) {_line(more)}")
        runs.append((own.mean(), more.mean()))
    if len(runs) > 1:
        a = np.array(runs)
        for i, what in enumerate(("run's own queries", "every never-trained image")):
            print(f"pooled over {len(a)} runs, {what}: {_line(a[:, i])}; runs at or above round 0: "
                  f"{int((a[:, i] >= -1e-9).sum())} of {len(a)}")


if __name__ == "__main__":
    main(sys.argv[1:])
