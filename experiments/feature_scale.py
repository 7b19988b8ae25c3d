"""Where a federated FiLM went wrong: the final adapter of a run, taken apart.

    python experiments/feature_scale.py RUN_DIR [RUN_DIR ...]

For each run (its config.json and final_state.npz) every training client evaluates, with the run's
own options and query sets, the initial adapter, the final one, and the final one with parts of it
put back to the initial values (the last norm layer's FiLM, all scales, all shifts; half of the
change). Printed per variant: personalized accuracy (mean over clients), the global nearest-mean
accuracy over all clients' classes, and the mean L2 norm of the query features the backbone
produces (before any ``feature_norm``): a norm that grows many-fold means FiLM inflated the features.
README's "Why the old defaults made Fashion-MNIST worse" quotes this script's output.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from fedfit.config import defaults, load_config
from fedfit.federated import ClientWork, initial_state
from fedfit.global_head import GlobalStatistics


def _raw_norm(work: ClientWork, flat: np.ndarray) -> float:
    """Mean L2 norm of the client's query features before the head's normalization (if any)."""
    work.load(flat)
    m = work.model
    with torch.no_grad():
        f = m.adapter.features(m.backbone, m.backbone.preprocess(work.data.query_x))
    return float(f.norm(dim=1).mean())


def evaluate(cfg: dict, flat: np.ndarray) -> tuple[float, float, float]:
    """(personalized accuracy, global nearest-mean accuracy, mean raw query-feature norm)."""
    accs, norms, queries = [], [], []
    stats = GlobalStatistics(int(ClientWork(cfg, 0).model.backbone.feature_dim), scatter=False)
    for p in range(cfg["num_clients"]):
        w = ClientWork(cfg, p)
        m, st = w.evaluate(flat, class_stats=True)
        accs.append(m["accuracy"])
        stats.add(p, st)
        queries.append(st)
        norms.append(_raw_norm(w, flat))
    head = stats.head("protonets", None, 1.0)
    f = np.concatenate([q["query_features"] for q in queries])
    y = np.concatenate([q["query_labels"] for q in queries])
    return float(np.mean(accs)), float((head.predict(f) == y).mean()), float(np.mean(norms))


def variants(init: dict, final: dict) -> dict[str, dict]:
    last = [k for k in init if k.startswith("adapter/") and "blocks" not in k and k.endswith("bn2")]
    pick = lambda keep: {k: final[k] if keep(k) else init[k] for k in init}  # noqa: E731
    return {"initial (frozen backbone)": init, "final": final,
            "final, last norm layer's FiLM reset": pick(lambda k: k not in last),
            "only the last norm layer's FiLM": pick(lambda k: k in last),
            "only the scales (gammas)": pick(lambda k: "gammas" in k),
            "only the shifts (betas)": pick(lambda k: "betas" in k),
            "half of the change": {k: init[k] + 0.5 * (final[k] - init[k]) for k in init}}


def main(run_dirs: list[str]) -> None:
    torch.set_num_threads(2)
    known = defaults()
    for d in map(Path, run_dirs):
        saved = json.loads((d / "config.json").read_text())
        cfg = load_config(overrides={**{k: v for k, v in saved.items() if k in known}, "device": "cpu"})
        layout, flat0 = initial_state(cfg)
        init = layout.unpack(flat0, copy=True)
        final = dict(np.load(d / "final_state.npz"))
        print(f"{d.name}:")
        for name, state in variants(init, final).items():
            acc, glob, norm = evaluate(cfg, layout.pack({k: state[k] for k in init}))
            print(f"  {name:38s} personalized {100 * acc:5.1f}%  global {100 * glob:5.1f}%  "
                  f"query feature norm {norm:7.2f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
