"""The ``fedfit`` command. Flower is imported lazily, only by the commands that start runs.

  fedfit fewshot   centralized few-shot evaluation (frozen heads vs FiLM fine-tuning)
  fedfit simulate  a federated run on Flower's simulation engine (Ray)
  fedfit sweep     a named experiment (many runs), resumable, with figures and tables
  fedfit dp-epsilon  both epsilons a DP federation would spend, from its options (no training)
  fedfit plot      figures and tables from run directories
  fedfit deploy    real machines: TLS certificates, SuperNode keys, SuperLink / SuperNode / flwr commands
"""
from __future__ import annotations

import argparse
import sys
import time


def _fewshot(args: argparse.Namespace) -> int:
    import torch

    from fedfit import progress as live
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
        every = max(1, args.tasks // 5)  # plain mode: five progress lines per shot setting
        row = live.bar(f"{shot}-shot: tasks", total=args.tasks)

        def progress(done, total, res, shot=shot, t0=t0, row=row):
            fin = f", fine-tuned {100 * mean_ci(res.finetuned)[0]:.1f}%" if res.finetuned else ""
            first = next(iter(res.frozen.values()))
            text = f"frozen {args.heads[0]} {100 * mean_ci(first)[0]:.1f}%{fin}"
            spent = time.perf_counter() - t0
            if row.live:
                row.update(description=f"{shot}-shot: tasks, {text}")
                row.advance()
            elif done % every == 0 or done == total:
                print(f"{shot}-shot: task {done}/{total}, {text} ({spent / done:.1f} s/task"
                      f"{live.eta(spent, done, total - done).replace(' | ', ', ')})", file=sys.stderr, flush=True)

        with row:
            results.append(run_fewshot(model, data, args.way, shot, args.query, args.tasks, args.heads, ft_head, ft,
                                       seed=args.seed, temperature=temp, progress=progress))
    print(f"\n{args.dataset}, {args.backbone} ({model.backbone.pretrained}), {args.image_size} px, {args.way}-way, "
          f"{args.query} query/class, {args.tasks} tasks, seed {args.seed}\n")
    print(format_table(results, args.steps, args.lr))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    """Exit 0: done, every client message answered; 3: done, but client messages failed (counted in
    rounds.jsonl with their reasons); 4: the federation could not go on (no client could train)."""
    from fedfit.app.api import resume_config
    from fedfit.config import load_config
    from strategies.loop import FederationError
    from strategies.simulate import simulate

    if args.resume:
        cfg = resume_config(args.resume, args.config, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    try:
        summary = simulate(cfg, verbose=args.verbose, resume=bool(args.resume), overwrite=args.overwrite)
    except FederationError as e:
        print(f"fedfit: error: {e}", file=sys.stderr)
        return 4
    if args.plot:
        from fedfit.plot import plot_runs

        for p in plot_runs([summary["run_dir"]], summary["run_dir"]):
            if p.suffix == ".png":
                print(f"figure: {p}")
    if summary.get("failures"):
        print(f"fedfit: {summary['failures']} client messages failed; see 'failures' in "
              f"{summary['run_dir']}/rounds.jsonl", file=sys.stderr)
        return 3
    return 0


def _bench(args: argparse.Namespace) -> int:
    """One run's efficiency on this machine (fedfit.bench): table on stdout, report in --out (JSON).
    Exit 0 whether or not the targets are met; 2: bad options (before any work); 3: client messages
    failed during the federation (report written); 4: the federation could not go on."""
    from fedfit.config import load_config
    from fedfit.bench.run import format_table, run_bench
    from strategies.loop import FederationError

    cfg = load_config(args.config, args.overrides)
    try:
        report = run_bench(cfg, out=args.out, rounds=args.rounds, ray=not args.no_ray, clients=args.clients,
                           keep_run=args.keep_run, verbose=args.verbose, peers=not args.no_peers)
    except FederationError as e:
        print(f"fedfit: error: {e}", file=sys.stderr)
        return 4
    print()
    print(format_table(report))
    print(f"report: {args.out}" + (f"; run directory: {report['run_dir']}" if report["run_dir"] else ""))
    failures = report["federation"]["failures"]
    if failures:
        first = (report["federation"]["first_failure"] or {}).get("reason")
        print(f"fedfit: {failures} client messages failed during the federation (first: {first}); its figures "
              f"are not a clean measurement", file=sys.stderr)
        return 3
    return 0


def _dp_epsilon(args: argparse.Namespace) -> int:
    """Both epsilons of the options' DP federation for each ``--noise`` multiplier (fedfit.app.dp_epsilon).
    Exit 2: bad options, or the installed dp-accounting disagrees with the reference cases."""
    from fedfit.app.dp_epsilon import table
    from fedfit.config import load_config
    from strategies.dp import accounting_problem

    cfg = load_config(args.config, args.overrides)
    problem = accounting_problem()
    if problem:
        print(f"fedfit: error: {problem}", file=sys.stderr)
        return 2
    print(table(cfg, args.noise))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from fedfit.app.api import sweep, sweep_configs

    if args.dry_run:
        import fnmatch

        name, configs = sweep_configs(args.file, *args.overrides)
        chosen = [c for c in configs if not args.only or any(fnmatch.fnmatchcase(c["name"], p) for p in args.only)]
        print(f"sweep {name}: {len(chosen)} of {len(configs)} runs -> {configs[0]['out_dir']}" if args.only
              else f"sweep {name}: {len(configs)} runs -> {configs[0]['out_dir']}")
        for c in chosen:
            print(f"  {c['name']}")
        return 0
    docs = (args.docs_dir or "docs") if args.docs else None
    result = sweep(args.file, *args.overrides, readme=args.readme, plot_only=args.plot_only, title=args.title,
                   verbose=args.verbose, only=args.only, docs=docs)
    if result.table:
        print(result.table)
        print(f"figures and tables: {result.figures[0].parent}")
        if docs:
            print(f"results page: {docs}/results/{result.name}.md (figures in {docs}/results/figures)")
    if args.readme:
        print(f"updated {args.readme} (section results:{result.name})")
    if result.failed:
        print(f"fedfit: {len(result.failed)} runs failed ({', '.join(result.failed)}); run the sweep again to "
              f"retry them", file=sys.stderr)
        return 3
    return 0


def _table(args: argparse.Namespace) -> int:
    from fedfit.results import read_run, rounds_markdown

    for d in args.runs:
        run = read_run(d)
        print(f"{run.name}\n\n{rounds_markdown(run)}\n")
    return 0


def _partition(args: argparse.Namespace) -> int:
    import numpy as np

    from fedfit.config import load_config
    from fedfit.federated import plans, source
    from fedfit.plot import plot_partition

    cfg = load_config(args.config, args.overrides)
    ps, data = plans(cfg), source(cfg)
    n = cfg["num_clients"]
    per = np.array([len(p.classes) for p in ps[:n]])
    size = np.array([len(p.support_y) for p in ps[:n]])
    what = {"kshot": f"{cfg['classes_per_client']} classes x {cfg['shots']} shots",
            "dirichlet": f"Dirichlet alpha = {cfg['dirichlet_alpha']:g}, quantity skew {cfg['quantity_skew']:g}",
            "natural": "one client per owner"}[cfg["partition"]]
    title = f"{cfg['dataset']}, partition = {cfg['partition']} ({what})"
    files = plot_partition(ps, list(data.class_names), args.out, n, title=title)
    print(f"fedfit partition: {title}: {n} training clients + {len(ps) - n} new users; classes per client "
          f"{per.mean():.1f} (min {per.min()}, max {per.max()}), support images per client {size.mean():.1f} "
          f"(min {size.min()}, max {size.max()}); figure: {files[0]}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from fedfit.plot import plot_runs

    out = args.out or (args.runs[0] if len(args.runs) == 1 else "plots")
    for p in plot_runs(args.runs, out, title=args.title, merge_seeds=args.merge_seeds):
        print(p)
    return 0


def _node_config(args: argparse.Namespace) -> dict:
    keys = (("dataset", args.dataset), ("data-root", args.data_root), ("cache-dir", args.cache_dir))
    return {k: v for k, v in keys if v}


def _deploy_init(args: argparse.Namespace) -> int:
    import shlex

    from fedfit.deploy import certificate_names, init_deployment
    from fedfit.config import load_config

    items = [f"num_clients={args.nodes}", f"clients_per_round={args.nodes}", "new_users=0", *args.run_config]
    cfg = load_config(overrides=items)  # validates keys, types and ranges
    run_config = {k: cfg[k] for k in dict.fromkeys(i.split("=", 1)[0].strip().replace("-", "_") for i in items)}
    b = init_deployment(args.out, args.superlink_host, args.nodes, names=args.name, port=args.port,
                        listen_host=args.listen_host, same_host=args.same_host, insecure=args.insecure,
                        connection=args.connection, node_config=_node_config(args), run_config=run_config,
                        app_dir=args.app, database=args.database, warm=not args.cold)
    mode = "NO TLS, NO SuperNode authentication (--insecure)" if args.insecure else "TLS and SuperNode authentication on"
    print(f"fedfit deploy: {b.root}: 1 SuperLink at {b.plan.address} and {args.nodes} SuperNodes, {mode}")
    if not args.insecure:
        dns, ips = certificate_names(b.superlink / "server.crt")
        print(f"  server certificate names: {', '.join(dns + ips)}")
        print(f"  keep {b.ca_key} on this machine: it signs certificates and is copied nowhere")
    print(f"  {b.superlink}/  -> the SuperLink machine, start with ./start.sh:")
    print(f"      {shlex.join(b.plan.superlink_command())}")
    for node, d in zip(b.plan.nodes, b.supernodes):
        print(f"  {d}/  -> client machine {node.index}, start with ./start.sh:")
        print(f"      {shlex.join(b.plan.supernode_command(node))}")
    print(f"  {b.operator}/  -> the operator (flwr CLI; any machine that reaches the SuperLink):")
    for script in ("connect.sh", "register.sh", "run.sh", "status.sh"):
        print(f"      {b.operator / script}")
    print(f"  after the run: fedfit deploy traffic RUN_ID --run-dir OUT_DIR/NAME --connection {args.connection}")
    return 0


def _deploy_node_key(args: argparse.Namespace) -> int:
    from fedfit.deploy import create_node_key

    priv, pub = create_node_key(args.path, comment=args.comment)
    print(f"private key (copy to the SuperNode, --auth-supernode-private-key): {priv}")
    print(f"public key (register it: flwr supernode register {pub} {args.connection}): {pub}")
    return 0


def _deploy_connect(args: argparse.Namespace) -> int:
    from fedfit.deploy import Plan, write_connection

    if not args.insecure and not args.ca:
        print("fedfit: error: --ca CA_CERT is required (or --insecure for a SuperLink without TLS)", file=sys.stderr)
        return 2
    path = write_connection(Plan(address=args.address, nodes=[], insecure=args.insecure, connection=args.name),
                            args.ca or "")
    print(f"SuperLink connection '{args.name}' ({args.address}) written to {path}")
    return 0


def _deploy_traffic(args: argparse.Namespace) -> int:
    from fedfit.deploy import record_flower_traffic, run_info, wait_for_run

    info = (wait_for_run(args.run_id, args.connection, timeout=args.wait) if args.wait > 0
            else run_info(args.run_id, args.connection))
    path = record_flower_traffic(args.run_dir, info)
    print(path.read_text(), end="")
    return 0


def _warm_worker(args: argparse.Namespace) -> int:
    import os

    from clients.warm import serve

    try:
        serve(args.socket, parent_pid=args.parent_pid)
    finally:
        if args.remove_dir:
            try:
                os.rmdir(os.path.dirname(os.path.abspath(args.socket)))
            except OSError:
                pass
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from fedfit.deploy import DeployError

    try:
        return args.deploy_fn(args)
    except DeployError as e:
        print(f"fedfit: error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    from fedfit.app.docs import options_epilog, see  # each command's help ends with the page that explains it

    p = argparse.ArgumentParser(prog="fedfit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=see("index"))
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fewshot", help="centralized few-shot evaluation over sampled tasks", epilog=see("concepts"))
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
    f.add_argument("--ft-head", default="protonets", help="head used while fine-tuning FiLM")
    f.add_argument("--steps", type=int, default=20, help="FiLM fine-tuning steps per task (0 = off)")
    f.add_argument("--lr", type=float, default=0.0035)
    f.add_argument("--weight-decay", type=float, default=0.0)
    f.add_argument("--temperature", default="dim",
                   help="ProtoNets logits -d^2 / T: 'dim' (T = feature dimension, well scaled) or a number (FiT: 1)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default=None)
    f.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    f.set_defaults(fn=_fewshot)

    s = sub.add_parser("simulate", help="federated run on Flower's simulation engine (Ray)",
                       epilog=options_epilog() + "\n\n" + see("getting-started"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", default=None, help="TOML file of options (see fedfit/defaults.toml)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rounds=20 shots=10")
    s.add_argument("--plot", action="store_true", help="write the run's figures when it ends")
    s.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    s.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue this run after its last complete round (its own options)")
    s.add_argument("--overwrite", action="store_true", help="start the run again over existing results")
    s.set_defaults(fn=_simulate)

    b = sub.add_parser("bench", help="one run's efficiency on this machine: bare model vs clients vs rounds, "
                                     "bytes, peak memory, Ray start-up (table + JSON)", epilog=see("performance"))
    b.add_argument("--config", default=None, help="TOML file of options (see fedfit/defaults.toml)")
    b.add_argument("overrides", nargs="*", help="key=value overrides, e.g. dataset=openclipart image_size=96")
    b.add_argument("--out", default="bench.json", help="the report (JSON; default: ./bench.json)")
    b.add_argument("--rounds", type=int, default=3, help="federated rounds to time (default 3; round 0 not counted)")
    b.add_argument("--clients", type=int, default=3, help="clients timed through ClientWork (default 3)")
    b.add_argument("--no-ray", action="store_true", help="skip the Ray start-up measurement (recorded as null)")
    b.add_argument("--no-peers", action="store_true",
                   help="skip the same federation on Flower's engine (pool_vs_flower_engine recorded as null)")
    b.add_argument("--keep-run", action="store_true",
                   help="keep the federation's run directory (a new folder next to --out); default: a temporary one")
    b.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    b.set_defaults(fn=_bench)

    de = sub.add_parser("dp-epsilon", help="both epsilons a DP federation would spend (its options, no training)",
                        epilog=see("how-to/dp"))
    de.add_argument("--config", default=None, help="TOML file of options (see fedfit/defaults.toml)")
    de.add_argument("overrides", nargs="*", help="key=value, e.g. num_clients=1000 clients_per_round=10 rounds=10")
    de.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3, 1.0, 2.0, 4.0, 8.0], metavar="Z",
                    help="noise multipliers to table (default: 0.1 0.3 1 2 4 8)")
    de.set_defaults(fn=_dp_epsilon)

    sw = sub.add_parser("sweep", help="run a named experiment (experiments/NAME.toml), resumable, with plots",
                        epilog=see("how-to/experiments"))
    sw.add_argument("file")
    sw.add_argument("overrides", nargs="*", help="key=value applied to every run")
    sw.add_argument("--docs", action="store_true",
                    help="write its results page, docs/results/NAME.md, with its figures (README.md untouched)")
    sw.add_argument("--docs-dir", default=None, metavar="DIR", help="the docs folder for --docs (default: docs)")
    sw.add_argument("--readme", default=None, help="also write the results table + figures into this README")
    sw.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    sw.add_argument("--plot-only", action="store_true", help="only redo figures/tables of finished runs")
    sw.add_argument("--only", action="append", default=[], metavar="PATTERN",
                    help="run only the runs whose names match this shell pattern (repeatable), e.g. 'fit-*'")
    sw.add_argument("--title", default=None)
    sw.add_argument("--verbose", action="store_true")
    sw.set_defaults(fn=_sweep)

    pa = sub.add_parser("partition", help="plan the clients of a configuration (no training) and draw them",
                        epilog=see("how-to/partition"))
    pa.add_argument("overrides", nargs="*", help="key=value (see fedfit/defaults.toml)")
    pa.add_argument("--config", default=None)
    pa.add_argument("--out", default="partition.png", help="figure path (PNG, and SVG beside it)")
    pa.set_defaults(fn=_partition)

    tb = sub.add_parser("table", help="per-round Markdown table of run directories", epilog=see("getting-started"))
    tb.add_argument("runs", nargs="+")
    tb.set_defaults(fn=_table)

    pl = sub.add_parser("plot", help="figures (PNG, SVG) and tables (CSV, Markdown) from run directories",
                        epilog=see("getting-started"))
    pl.add_argument("runs", nargs="+")
    pl.add_argument("--out", default=None, help="output folder (default: the run folder, or ./plots)")
    pl.add_argument("--title", default=None)
    pl.add_argument("--merge-seeds", action="store_true",
                    help="one line per group of runs differing only by seed=N (their round-by-round mean)")
    pl.set_defaults(fn=_plot)

    deploy_docs = see("how-to/real-machines")
    d = sub.add_parser("deploy", help="real machines: certificates, SuperNode keys, start commands, Flower's traffic",
                       epilog=deploy_docs)
    d.set_defaults(fn=_deploy)
    dsub = d.add_subparsers(dest="deploy_command", required=True)
    di = dsub.add_parser("init", help="CA + SuperLink certificate + one key per SuperNode + a start script per machine",
                         epilog=deploy_docs)
    di.add_argument("out", help="folder to write (one sub-folder per machine)")
    di.add_argument("--superlink-host", default="127.0.0.1", help="name or IP the SuperNodes use to reach the SuperLink")
    di.add_argument("--name", action="append", default=[], help="more DNS names / IPs for the certificate (repeatable)")
    di.add_argument("--nodes", type=int, required=True, help="number of SuperNodes (= num_clients)")
    di.add_argument("--port", type=int, default=9092, help="SuperLink port (Fleet, Control and Runtime APIs)")
    di.add_argument("--listen-host", default="0.0.0.0", help="address the SuperLink binds")
    di.add_argument("--same-host", action="store_true", help="SuperNodes share one machine: distinct Runtime ports")
    di.add_argument("--insecure", action="store_true", help="no TLS and no SuperNode authentication (testing only)")
    di.add_argument("--connection", default="fedfit", help="flwr CLI connection name")
    di.add_argument("--dataset", default=None, help="node config: dataset on the SuperNodes")
    di.add_argument("--data-root", default=None, help="node config: each SuperNode's data folder ({i} = its index)")
    di.add_argument("--cache-dir", default=None, help="node config: each SuperNode's fedfit cache ({i} = its index)")
    di.add_argument("--run-config", nargs="*", default=[], metavar="KEY=VALUE", help="fedfit options for run.sh")
    di.add_argument("--app", default=None, help="fedfit checkout that `flwr run` builds (default: this one)")
    di.add_argument("--database", default="", help="SuperLink state database file (default: in memory)")
    di.add_argument("--cold", action="store_true",
                    help="no warm worker: every message pays Python, torch and the model's start-up on its SuperNode")
    di.set_defaults(deploy_fn=_deploy_init)
    dk = dsub.add_parser("node-key", help="one more SuperNode key pair (EC P-384, OpenSSH format)", epilog=deploy_docs)
    dk.add_argument("path", help="private key file; the public key goes to PATH.pub")
    dk.add_argument("--comment", default="")
    dk.add_argument("--connection", default="fedfit")
    dk.set_defaults(deploy_fn=_deploy_node_key)
    dc = dsub.add_parser("connect", help="add the SuperLink connection to the flwr CLI ($FLWR_HOME/config.toml)",
                         epilog=deploy_docs)
    dc.add_argument("--address", required=True, help="SuperLink host:port")
    dc.add_argument("--ca", default=None, help="CA certificate (ca.crt)")
    dc.add_argument("--insecure", action="store_true", help="a SuperLink without TLS")
    dc.add_argument("--name", default="fedfit", help="connection name")
    dc.set_defaults(deploy_fn=_deploy_connect)
    dt = dsub.add_parser("traffic", help="record Flower's per-run traffic (flwr ls) into a run folder",
                         epilog=deploy_docs)
    dt.add_argument("run_id")
    dt.add_argument("--run-dir", required=True, help="the run's folder (out_dir/name, where rounds.jsonl is)")
    dt.add_argument("--connection", default="fedfit")
    dt.add_argument("--wait", type=float, default=0.0, help="first wait up to this many seconds for the run to finish")
    dt.set_defaults(deploy_fn=_deploy_traffic)
    ww = sub.add_parser("warm-worker", help="a SuperNode's warm worker: answers its ClientApps' messages with torch "
                        "and the model kept loaded (started by the SuperNode's start.sh)", epilog=deploy_docs)
    ww.add_argument("--socket", required=True, help="Unix socket to listen on (created 0600)")
    ww.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) is gone")
    ww.add_argument("--remove-dir", action="store_true", help="remove the socket's folder on exit")
    ww.set_defaults(fn=_warm_worker)
    sn = sub.add_parser("supernode", help="Flower's flower-supernode (same options), with a message whose run "
                        "stopped while it was received dropped (clients.supernode; started by the SuperNode's "
                        "start.sh)", epilog=deploy_docs, add_help=False)
    sn.add_argument("flower_args", nargs=argparse.REMAINDER, help="flower-supernode's options")
    sn.set_defaults(fn=_supernode)
    return p


def _supernode(args: argparse.Namespace) -> int:
    from clients.supernode import main

    return main(args.flower_args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["supernode"]:  # every option after it is flower-supernode's, even --help
        return _supernode(argparse.Namespace(flower_args=argv[1:]))
    args = build_parser().parse_args(argv)
    from fedfit.backbones import BackboneError
    from fedfit.client_state import ClientStateError
    from fedfit.config import ConfigError
    from fedfit.data import DataError
    from fedfit.preflight import ResourceError
    from fedfit.results import RunExistsError, RunFormatError

    try:
        return args.fn(args)
    except (ConfigError, DataError, BackboneError, ResourceError, RunExistsError, RunFormatError, ClientStateError,
            FileNotFoundError) as e:
        print(f"fedfit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedfit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
