"""What moves the frozen Lite0 + FiLM closer to the machine: memory format, inference mode, torch.compile,
and evaluating several clients in one forward, measured against the current code path.

    python experiments/hardware_knobs.py                      # default federation's model: OpenClipart 96 px
    python experiments/hardware_knobs.py image_size=32 dataset=fashion-mnist

One torch thread (as one pool actor has). The variants run interleaved, ``--repeats`` rounds of each
(default 7), each timed over about 1 s of work; the table gives the median images/s and the ratio to
the current path (``as is``). Workloads, as the federation does them:

* ``forward``: evaluation, one client's 25 support + 50 query images under the adapter, no gradients;
* ``forward_backward``: one training step, an episode of 25 support images, backward to FiLM;
* ``eval of 10 clients``: 10 clients' 75 images each, per client (as the pool evaluates) against all
  750 in batches of 250 (what batching the clients that share the global adapter would do).

Variants: ``as is`` (fedfit today: preprocess permutes uint8 NHWC to a channels-last float tensor, the
weights are NCHW-contiguous, ``torch.no_grad``), ``NCHW input`` (the input made contiguous),
``channels_last`` (weights and input channels-last), ``inference_mode`` (instead of ``no_grad``),
``compiled`` (``torch.compile`` of the adapter'd backbone, inductor; its compile time is reported).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedfit.config import load_config  # noqa: E402
from fedfit.federated import shared_model  # noqa: E402


def timed(step, target_s: float = 1.0) -> float:
    """Calls per second of ``step`` over about ``target_s`` seconds (after one untimed call)."""
    step()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= target_s:
            return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("options", nargs="*", help="fedfit options, key=value")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(None, a.options)
    model = shared_model(cfg)
    s = cfg["image_size"]
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(750, s, s, 3), dtype=np.uint8)
    pre = model.backbone.preprocess
    x75, x25 = pre(imgs[:75]), pre(imgs[:25])
    clients = [pre(imgs[i:i + 75]) for i in range(0, 750, 75)]
    params = [p for p in model.adapter.parameters() if p.requires_grad]
    embed = model.embed

    def fwd(x, ctx=torch.no_grad, f=embed):
        def step():
            with ctx():
                f(x)
        return step

    def fwdbwd(x, f=None):
        def step():
            (f or embed)(x).square().mean().backward()
            for p in params:
                p.grad = None
        return step

    variants: dict[str, dict] = {}
    model.eval()
    variants["as is"] = {"forward": fwd(x75), "eval10_per_client": lambda: [fwd(c)() for c in clients],
                         "eval10_batched": lambda: [fwd(b)() for b in torch.cat(clients).split(250)]}
    variants["NCHW input"] = {"forward": fwd(x75.contiguous())}
    variants["inference_mode"] = {"forward": fwd(x75, torch.inference_mode)}
    results: dict[tuple[str, str], list[float]] = {}
    compile_s = None
    compiled = None
    if not a.no_compile:
        t0 = time.perf_counter()
        compiled = torch.compile(embed)
        with torch.no_grad():
            compiled(x75)
        compile_s = time.perf_counter() - t0
    for rep in range(a.repeats):
        # forward variants (eval mode), channels_last swaps the weights' format in and out
        model.eval()
        for name, steps in variants.items():
            for work, step in steps.items():
                results.setdefault((name, work), []).append(timed(step))
        model.backbone.to(memory_format=torch.channels_last)
        results.setdefault(("channels_last", "forward"), []).append(
            timed(fwd(x75.contiguous(memory_format=torch.channels_last))))
        model.train()
        results.setdefault(("channels_last", "forward_backward"), []).append(
            timed(fwdbwd(x25.contiguous(memory_format=torch.channels_last))))
        model.backbone.to(memory_format=torch.contiguous_format)
        results.setdefault(("as is", "forward_backward"), []).append(timed(fwdbwd(x25)))
        results.setdefault(("NCHW input", "forward_backward"), []).append(timed(fwdbwd(x25.contiguous())))
        if compiled is not None:
            model.eval()
            results.setdefault(("compiled", "forward"), []).append(timed(fwd(x75, f=compiled)))
            model.train()
            results.setdefault(("compiled", "forward_backward"), []).append(timed(fwdbwd(x25, compiled)))
        model.eval()
    images = {"forward": 75, "forward_backward": 25, "eval10_per_client": 750, "eval10_batched": 750}
    base = {w: statistics.median(results[("as is", w)]) * images[w] for w in ("forward", "forward_backward")}
    print(f"Lite0 + {cfg['adapter']} at {s} px, 1 thread, {a.repeats} interleaved repeats (median images/s)"
          + (f"; torch.compile took {compile_s:.1f} s" if compile_s else ""))
    print("| variant | work | images/s | vs as is |")
    print("|---|---|---:|---:|")
    for (name, work), runs in results.items():
        ips = statistics.median(runs) * images[work]
        ref = base.get(work) or statistics.median(results[("as is", "eval10_per_client")]) * 750
        print(f"| {name} | {work} | {ips:.1f} | {ips / ref:.3f} |")


if __name__ == "__main__":
    main()
