"""fedfit against pfl-research and Flower's own simulation engine, on one workload, side by side.

    python experiments/peers/run.py                       # both sizes, 3 repeats each, engines alternating
    python experiments/peers/run.py --sizes openclipart --repeats 1 --rounds 4   # a quick look
    python experiments/peers/run.py --readme README.md    # also write the table between README's markers

The workload is FiT as fedfit runs it by default (FiLM on frozen Lite0 + ProtoNets on unit features,
10 episodic Adam steps per client and round, FedAvg), with a constant learning rate (pfl's local learning
rate is a constant; ``lr_schedule = step`` makes fedfit's one too) and evaluation at round 0 and after
the last round only (so the rounds in between are training only, in every engine):

* ``openclipart``: fedfit's default federation (OpenClipart 96 px, 20 clients x 5 classes x 5 shots,
  5 per round, 10 new users);
* ``fashion-1000``: Fashion-MNIST 32 px, 1,000 clients x 5 classes x 5 shots, 10 per round, 50
  evaluated clients (fedfit's seeded sample) + 10 new users.

Engines, each a fresh process per run, run in turn (fedfit pool, Flower engine, pfl; the order rotates
every repeat, since the machine drifts):

* ``fedfit``: ``fedfit simulate`` (engine = ray: fedfit's pool of Ray actors, one per core);
* ``flower``: ``fedfit simulate engine=flower`` (Flower's simulation engine, one actor per core);
* ``pfl``: ``experiments/peers/pfl_fit.py`` under ``torchrun``, one worker per core, in pfl's own venv.

pfl's venv (``experiments/peers/.venv-pfl``, made on first use): ``pip install pfl==0.6.0`` resolves pfl's
own pins there (dp-accounting < 0.6, ...), and a ``.pth`` file puts this interpreter's site-packages
after them, so that torch, timm and the data are the very same builds in all three (a speed difference
is the simulator's, not torch's). fedfit's core provides the data and the model in the pfl script; the
simulator around them (datasets, sampling, local training loop, aggregation, workers) is pfl's.

Per run: seconds per round (median over the training-only rounds 1 .. R-1), start-up (the run's wall
time minus its rounds: process start, imports, workers, data, model and round-0 evaluation, plus
shutdown), peak PSS of the whole process tree (``fedfit.bench.memory.PssSampler``: the driver, its
descendants and the Ray processes named after it) and personalized accuracy at round 0 and after R
rounds. Round 0 is the same frozen model on the same clients in every engine, so its accuracy must be
equal to the digit: that is the check that the workloads are the same (plus the final accuracy within
seed noise: the engines draw different episodes). Results: OUT/results.jsonl (one line per run, kept
across invocations) and OUT/table.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedfit.bench import memory  # noqa: E402
from fedfit.format import human_bytes  # noqa: E402

VENV = ROOT / "experiments" / "peers" / ".venv-pfl"
PFL = "pfl==0.6.0"
ENGINES = ("fedfit", "flower", "pfl")
COMMON = {"lr_schedule": "step", "global_eval": False, "devices": "uniform"}
SIZES = {
    "openclipart": {},
    "fashion-1000": {"dataset": "fashion-mnist", "image_size": 32, "num_clients": 1000, "clients_per_round": 10,
                     "eval_clients": 50},
    "digits": {"dataset": "digits", "image_size": 32, "num_clients": 10, "clients_per_round": 4},  # a smoke test
}
MARK = "peers"


def pfl_python() -> Path:
    """pfl's venv interpreter, making the venv first if needed (pfl's pins; our torch after them)."""
    py = VENV / "bin" / "python"
    if py.exists():
        return py
    print(f"peers: creating {VENV} ({PFL})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", PFL], check=True)
    site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    ours = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    Path(site, "zz_fedfit_site.pth").write_text(ours + "\n")  # after pfl's own packages: pfl's pins win
    return py


def options(size: str, rounds: int, seed: int) -> dict:
    return {**COMMON, **SIZES[size], "rounds": rounds, "eval_every": rounds, "seed": seed}


def command(engine: str, opts: dict, work: Path) -> list[str]:
    if engine == "pfl":
        (work / "options.json").write_text(json.dumps(opts))
        return [str(pfl_python()), "-m", "torch.distributed.run", f"--nproc_per_node={os.cpu_count()}",
                str(ROOT / "experiments" / "peers" / "pfl_fit.py"), str(work / "options.json"),
                str(work / "result.json")]
    extra = ["engine=flower"] if engine == "flower" else []
    return [sys.executable, "-m", "fedfit.app.cli", "simulate", *[f"{k}={v}" for k, v in opts.items()], *extra,
            f"out_dir={work}", "name=run", "--overwrite"]


def measure(engine: str, size: str, rounds: int, seed: int) -> dict:
    """One run in a fresh process tree: wall time, peak PSS, rounds and accuracy."""
    opts = options(size, rounds, seed)
    with tempfile.TemporaryDirectory(prefix=f"peers-{engine}-") as tmp:
        work = Path(tmp)
        cmd = command(engine, opts, work)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FEDFIT_PROGRESS": "plain",
               "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
        t0 = time.perf_counter()
        with open(work / "log.txt", "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            sampler = memory.PssSampler(root=proc.pid, match=memory.ray_session_pattern(proc.pid))
            sampler.start()
            rc = proc.wait()
            sampler.stop()
        wall = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"peers: {engine} on {size} failed (exit {rc}):\n"
                             + (work / "log.txt").read_text()[-3000:])
        if engine == "pfl":
            r = json.loads((work / "result.json").read_text())
            train_rounds = r["round_seconds"][:rounds - 1]  # training only (evaluation is timed apart)
            in_rounds = sum(r["round_seconds"]) + r["final"]["seconds"]
            acc0, acc, new0, new = r["round0"]["acc"], r["final"]["acc"], r["round0"]["new_acc"], r["final"]["new_acc"]
        else:
            recs = [json.loads(line) for line in (work / "run" / "rounds.jsonl").read_text().splitlines()]
            train_rounds = [x["seconds"] for x in recs[1:-1]]  # the last round also evaluates
            in_rounds = sum(x["seconds"] for x in recs[1:])
            acc0, acc = recs[0]["acc_mean"], recs[-1]["acc_mean"]
            new0, new = recs[0]["new_acc_mean"], recs[-1]["new_acc_mean"]
    return {"engine": engine, "size": size, "rounds": rounds, "seed": seed, "wall_s": wall,
            "seconds_per_round": statistics.median(train_rounds), "round_seconds": train_rounds,
            "startup_s": wall - in_rounds, "peak_pss_bytes": sampler.peak.bytes,
            "acc_round0": acc0, "acc": acc, "new_acc_round0": new0, "new_acc": new,
            "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def table(results: list[dict]) -> str:
    """Markdown: per size and engine, medians over repeats; fedfit's ratio to each peer (> 1: fedfit faster),
    of the medians and per repeat (the k-th run of each engine, run next to each other)."""
    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    lines = ["| workload | engine | runs | s / round (median) | start-up (s) | peak PSS | round 0 acc (%) | "
             "final acc (%) | new users final (%) | fedfit's speed-up: peer's s / round over fedfit's |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in SIZES:
        rows = {e: [r for r in results if r["size"] == size and r["engine"] == e] for e in ENGINES}
        if not rows["fedfit"]:
            continue
        ours = med(rows["fedfit"], "seconds_per_round")
        for e in ENGINES:
            rs = rows[e]
            if not rs:
                continue
            spr = med(rs, "seconds_per_round")
            pairs = [r["seconds_per_round"] / f["seconds_per_round"] for r, f in zip(rs, rows["fedfit"])]
            ratio = "1 (itself)" if e == "fedfit" else (f"**{spr / ours:.2f}x** (per repeat: "
                                                        + ", ".join(f"{x:.2f}" for x in pairs) + ")")
            accs = ", ".join(f"{100 * r['acc']:.1f}" for r in rs)
            lines.append(f"| {size} ({rs[0]['rounds']} rounds) | {e} | {len(rs)} | {spr:.2f} | {med(rs, 'startup_s'):.1f} | "
                         f"{human_bytes(med(rs, 'peak_pss_bytes'))} | {100 * med(rs, 'acc_round0'):.1f} | {accs} | "
                         f"{100 * med(rs, 'new_acc'):.1f} | {ratio} |")
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> None:
    start, end = f"<!-- results:{MARK}:start -->", f"<!-- results:{MARK}:end -->"
    body = readme.read_text()
    if start not in body or end not in body:
        raise SystemExit(f"peers: {readme} has no {start} ... {end} markers")
    head, rest = body.split(start, 1)
    readme.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="openclipart,fashion-1000", help=f"comma-separated: {', '.join(SIZES)}")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--repeats", type=int, default=3, help="runs per engine and size (alternating)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds per run (the last one also evaluates)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "peers"))
    ap.add_argument("--readme", default="", help="write the table between README's peers markers")
    ap.add_argument("--table-only", action="store_true", help="only (re)write the table from OUT/results.jsonl")
    a = ap.parse_args()
    sizes, engines = a.sizes.split(","), a.engines.split(",")
    bad = [s for s in sizes if s not in SIZES] + [e for e in engines if e not in ENGINES]
    if bad:
        raise SystemExit(f"peers: unknown size or engine {bad}; sizes: {list(SIZES)}, engines: {list(ENGINES)}")
    if a.rounds < 3:
        raise SystemExit("peers: --rounds must be >= 3 (rounds 1 .. R-1 are the timed training-only rounds)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    if not a.table_only:
        if "pfl" in engines:
            pfl_python()
        for rep in range(a.repeats):
            for size in sizes:
                order = engines[rep % len(engines):] + engines[:rep % len(engines)]
                for engine in order:
                    r = measure(engine, size, a.rounds, a.seed)
                    print(f"peers: {size} {engine} (repeat {rep + 1}/{a.repeats}): {r['seconds_per_round']:.2f} s/round, "
                          f"start-up {r['startup_s']:.1f} s, peak {human_bytes(r['peak_pss_bytes'])}, accuracy "
                          f"{100 * r['acc_round0']:.1f} -> {100 * r['acc']:.1f}%", flush=True)
                    with open(results_path, "a") as f:
                        f.write(json.dumps(r) + "\n")
    results = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
    text = (f"Regenerate with `python experiments/peers/run.py --readme README.md` ({len(results)} runs, "
            f"{results[0]['cpus'] if results else '?'} CPUs).\n\n" + table(results))
    (out / "table.md").write_text(text + "\n")
    print(text)
    if a.readme:
        write_readme(Path(a.readme), text)


if __name__ == "__main__":
    main()
