"""The ``fedfit`` command. Flower is imported lazily, only by the commands that start runs.

  fedfit fewshot   centralized few-shot evaluation (frozen heads vs FiLM fine-tuning)
  fedfit simulate  a federated run on Flower's simulation engine (Ray)
  fedfit plot      figures and tables from run directories
"""
from __future__ import annotations

import argparse
import sys
import time


def _fewshot(args: argparse.Namespace) -> int:
    import torch

    from fedfit.data import load_source
    from fedfit.episodes import FineTuneConfig
    from fedfit.fewshot import format_table, mean_ci, run_fewshot
    from fedfit.model import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_source(args.dataset, image_size=args.image_size, root=args.data_root)
    print(f"{args.dataset}: {len(data.images)} images, {data.num_classes} classes at {args.image_size} px; "
          f"skipped: {data.skipped or 'none'}", file=sys.stderr)
    model = build_model(args.backbone, args.weights, "film", "protonets", device=args.device)
    print(f"backbone {args.backbone} ({model.backbone.pretrained}), FiLM: {model.adapter.num_parameters():,} parameters",
          file=sys.stderr)
    temp = args.temperature if args.temperature == "dim" else float(args.temperature)
    ft = FineTuneConfig(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay)
    results = []
    for shot in args.shot:
        ft_head = None if (args.steps <= 0 or shot <= 1) else args.ft_head
        t0 = time.perf_counter()

        def progress(done, total, res, shot=shot, t0=t0):
            fin = f", fine-tuned {100 * mean_ci(res.finetuned)[0]:.1f}%" if res.finetuned else ""
            first = next(iter(res.frozen.values()))
            print(f"\r{shot}-shot: task {done}/{total} [{'#' * (20 * done // total):<20}] "
                  f"frozen {args.heads[0]} {100 * mean_ci(first)[0]:.1f}%{fin} "
                  f"({(time.perf_counter() - t0) / done:.1f} s/task)", end="", file=sys.stderr, flush=True)

        results.append(run_fewshot(model, data, args.way, shot, args.query, args.tasks, args.heads, ft_head, ft,
                                   seed=args.seed, temperature=temp, progress=progress))
        print(file=sys.stderr)
    print(f"\n{args.dataset}, {args.backbone} ({model.backbone.pretrained}), {args.image_size} px, {args.way}-way, "
          f"{args.query} query/class, {args.tasks} tasks, seed {args.seed}\n")
    print(format_table(results, args.steps, args.lr))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from fedfit.config import load_config
    from strategies.simulate import simulate

    cfg = load_config(args.config, args.overrides)
    summary = simulate(cfg, verbose=args.verbose)
    if args.plot:
        from fedfit.plot import plot_runs

        for p in plot_runs([summary["run_dir"]], summary["run_dir"]):
            if p.suffix == ".png":
                print(f"figure: {p}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from fedfit.plot import plot_runs

    out = args.out or (args.runs[0] if len(args.runs) == 1 else "plots")
    for p in plot_runs(args.runs, out, title=args.title):
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedfit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fewshot", help="centralized few-shot evaluation over sampled tasks")
    f.add_argument("--dataset", default="openclipart")
    f.add_argument("--data-root", default=None)
    f.add_argument("--backbone", default="efficientnet_lite0")
    f.add_argument("--weights", default="default", help="default | none | PATH")
    f.add_argument("--image-size", type=int, default=96, help="pixels")
    f.add_argument("--way", type=int, default=5)
    f.add_argument("--shot", type=int, nargs="+", default=[1, 5, 10])
    f.add_argument("--query", type=int, default=10, help="query images per class")
    f.add_argument("--tasks", type=int, default=30)
    f.add_argument("--heads", nargs="+", default=["protonets", "lda", "qda"], help="frozen heads to score")
    f.add_argument("--ft-head", default="lda", help="head used while fine-tuning FiLM")
    f.add_argument("--steps", type=int, default=40, help="FiLM fine-tuning steps per task (0 = off)")
    f.add_argument("--lr", type=float, default=0.0035)
    f.add_argument("--weight-decay", type=float, default=0.0)
    f.add_argument("--temperature", default="1", help="ProtoNets: 1 (FiT) or 'dim'")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default=None)
    f.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    f.set_defaults(fn=_fewshot)

    s = sub.add_parser("simulate", help="federated run on Flower's simulation engine (Ray)")
    s.add_argument("--config", default=None, help="TOML file of options (see fedfit/defaults.toml)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rounds=20 shots=10")
    s.add_argument("--plot", action="store_true", help="write the run's figures when it ends")
    s.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    s.set_defaults(fn=_simulate)

    pl = sub.add_parser("plot", help="figures (PNG, SVG) and tables (CSV, Markdown) from run directories")
    pl.add_argument("runs", nargs="+")
    pl.add_argument("--out", default=None, help="output folder (default: the run folder, or ./plots)")
    pl.add_argument("--title", default=None)
    pl.set_defaults(fn=_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fedfit.backbones import BackboneError
    from fedfit.config import ConfigError
    from fedfit.data import DataError

    try:
        return args.fn(args)
    except (ConfigError, DataError, BackboneError, FileNotFoundError) as e:
        print(f"fedfit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedfit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
