"""The deployment soak (issue 31): ``pytest -m soak`` runs the short version (4 SuperNodes, 3 rounds: 2.5
minutes, so left out of the default run); ``bash experiments/soak.sh NODES ROUNDS`` the soak at scale.

SuperNodes with warm workers, TLS and node authentication, the SuperLink on its SQLite database, each
Flower process in its own network namespace where the runner allows it (else all on loopback). During
the run:

* every round one SuperNode is killed with SIGKILL (its worker with it) while it trains - after it has
  pulled its training message and its ClientApp has it (its byte ledger, ``clients.ledger``, counted it),
  before it answers - and started again at once;
* from ``FEDFIT_SOAK_DROP_S > 0`` one SuperNode loses its network for that many seconds (its veth taken
  down; on loopback its processes are stopped with SIGSTOP instead: silent for as long);
* a SuperNode whose key was never registered tries to join (it must be refused);
* once round ``rounds // 2 - 1`` is recorded, the SuperLink itself is killed while the SuperNodes train and
  started again from its database.
  Flower 1.42 does not continue a run whose SuperLink died (it reports it ``finished:failed``), so the
  operator starts it again with ``resume=true``.

Measured and written to ``FEDFIT_SOAK_REPORT`` (JSON, when set): failures by kind and phase, Flower's
traffic figure for both runs against fedfit's metering and against what the SuperNodes counted, peak memory of the SuperLink's and every
SuperNode's process tree, the accuracy against a simulated run with the same failures
(``replay_failures``), over ``FEDFIT_SOAK_SEEDS`` seeds of that simulation.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fedfit import deploy
from fedfit.deploy import Node, create_node_key, init_deployment, record_flower_traffic, run_info, wait_for_run
from fedfit.deploy.traffic import _json_out
from fedfit.results import read_rounds
from tests.proc_memory import Sampler
from tests.test_deployment import (REPO, RUN_CONFIG, _flwr, _free_port, _ip, _nodes_online, _tls_ok, _wait,
                                   needs_flower_bins, processes_and_network)

N = int(os.environ.get("FEDFIT_SOAK_NODES", 4))
ROUNDS = int(os.environ.get("FEDFIT_SOAK_ROUNDS", 3))
DROP_S = float(os.environ.get("FEDFIT_SOAK_DROP_S", 0))
TIMEOUT_S = int(os.environ.get("FEDFIT_SOAK_TIMEOUT_S", 20))
SEEDS = int(os.environ.get("FEDFIT_SOAK_SEEDS", 1))
NAMES = ["superlink", "rogue", *(f"node{i}" for i in range(N))]


@pytest.fixture
def soak_cluster(tmp_path):
    with processes_and_network(tmp_path, NAMES) as both:
        yield both


def _unanswered_train(log: str) -> bool:
    """The SuperNode has pulled a training message that its worker has not answered yet."""
    return log.count("Receiving: train message") > log.count("train message answered")


def _node_report(env: dict[str, str], procs, nodes: dict[str, subprocess.Popen]) -> str:
    """What Flower says of each SuperNode (``flwr supernode ls``) and, per SuperNode process, whether it
    runs and its last log lines: why a SuperNode is not back after a SuperLink restart."""
    p = _flwr(["flwr", "supernode", "ls", deploy.CONNECTION, "--format", "json"], env)
    lines = [f"flwr supernode ls: {p.stdout.strip()[-4000:]}"]
    for name, q in nodes.items():
        tail = procs.log(name).strip().splitlines()[-4:]
        lines.append(f"--- {name}: {'running' if q.poll() is None else f'exited ({q.returncode})'}\n" + "\n".join(tail))
    return "\n".join(lines)


def _in_clientapp(ledger: Path) -> bool:
    """The SuperNode's ClientApp holds a message it has not answered (its byte ledger, clients.ledger, has
    more arrivals than replies): killed now, the message it pulled is in its own count too."""
    text = ledger.read_text() if ledger.is_file() else ""
    return text.count('"rx"') > text.count('"tx"')


@needs_flower_bins
@pytest.mark.soak
def test_soak_kills_a_drop_a_rogue_and_a_superlink_restart_every_round_once(soak_cluster, tmp_path):
    procs, net = soak_cluster
    n, last = N, ROUNDS
    superlink_round = max(2, last // 2)
    drop_round, rogue_round = max(1, last // 4), max(1, last // 3)
    host = net.addr["superlink"] if net else "127.0.0.1"
    port = deploy.SUPERLINK_PORT if net else _free_port()
    run_config = {**RUN_CONFIG, "num_clients": n, "clients_per_round": n, "rounds": last, "timeout_s": TIMEOUT_S,
                  "out_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache-server")}
    b = init_deployment(tmp_path / "deploy", host, n, port=port,
                        node_ports=[deploy.SUPERNODE_PORT] * n if net else [_free_port() for _ in range(n)],
                        same_host=net is None, node_config={"cache-dir": str(tmp_path / "cache-node{i}")},
                        run_config=run_config, app_dir=str(REPO), database=str(tmp_path / "superlink.db"))
    env = {k: procs.env(FLWR_HOME=str(tmp_path / f"flwr-home-{k}"), FEDFIT_CACHE=str(tmp_path / f"cache-{k}"))
           for k in [*NAMES, "operator"]}
    ns = (lambda k: net.ns[k]) if net else (lambda k: None)
    current: dict[str, tuple[str, subprocess.Popen]] = {}  # label -> (log name, process)

    def start_superlink(name):
        p = procs.start(name, ["bash", str(b.superlink / "start.sh")], b.superlink, env["superlink"], ns("superlink"))
        _wait("the SuperLink's TLS port", lambda: _tls_ok(host, port, b.operator / "ca.crt"), 60, procs, {name: p})
        current["superlink"] = (name, p)
        return p

    def start_node(i, name):
        p = procs.start(name, ["bash", str(b.supernodes[i] / "start.sh")], b.supernodes[i], env[f"node{i}"],
                        ns(f"node{i}"))
        current[f"node{i}"] = (name, p)
        return p

    def kill(p):
        os.killpg(p.pid, signal.SIGKILL)  # the process and everything it started (worker, ClientApps, ServerApp)
        p.wait(timeout=30)

    rounds_file = tmp_path / "runs" / "deploy" / "rounds.jsonl"

    runs: list[str] = []
    checked = [0.0]

    def rounds_recorded():
        """The last round in rounds.jsonl (-1 before round 0): one file read, nothing else."""
        return len(rounds_file.read_text().splitlines()) - 1 if rounds_file.exists() else -1

    def rounds_done():
        """Rounds recorded so far; fails the test at once when the current run ended otherwise (checked every
        15 s with ``flwr ls``: seconds on a loaded machine)."""
        if runs and time.monotonic() - checked[0] > 15:
            checked[0] = time.monotonic()
            info = run_info(runs[-1], env=env["operator"])
            if info["status"].startswith("finished:") and info["status"] != "finished:completed":
                if not (len(runs) == 1 and killed_superlink[0]):  # the killed SuperLink's run fails: expected
                    pytest.fail(f"run {runs[-1]}: {info['status']}: {info.get('status-details')}")
        return rounds_recorded()

    killed_superlink = [False]
    events: list[str] = []
    t0 = time.monotonic()

    def event(text):
        events.append(f"{time.monotonic() - t0:7.1f} s  {text}")

    sl = start_superlink("superlink")
    for script in ("connect.sh", "register.sh"):
        p = subprocess.run(["bash", str(b.operator / script)], env=env["operator"], capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
    for i in range(n):
        start_node(i, f"node{i}")
    with Sampler(lambda: {k: p.pid for k, (_, p) in current.items()}) as memory:
        _wait("every SuperNode online", lambda: _nodes_online(env["operator"]) == n, 300, procs, {"superlink": sl},
              poll=2.0)
        event(f"{n} SuperNodes online")
        p = _flwr(b.plan.run_command(str(REPO), run_config), env["operator"])
        assert p.returncode == 0, p.stdout + p.stderr
        runs.append(_json_out(p.stdout)["run-id"])
        dropper = n - 1 if DROP_S > 0 and n > 2 else None
        victims = [i for i in range(n) if i != dropper]
        kills, missed, dropped, rogue = [], [], None, None

        def drop(i):
            label, (name, p) = f"node{i}", current[f"node{i}"]
            if net:
                veth = net.veths[NAMES.index(label)]
                _ip("link", "set", veth, "down")
                time.sleep(DROP_S)
                _ip("link", "set", veth, "up")
            else:
                os.killpg(p.pid, signal.SIGSTOP)
                time.sleep(DROP_S)
                os.killpg(p.pid, signal.SIGCONT)
            event(f"node{i} back after {DROP_S:g} s without network")

        r = 1
        while r <= last:
            _wait(f"round {r - 1}", lambda: rounds_done() >= r - 1, 900, procs, {"superlink": sl})
            if r == superlink_round and len(runs) == 1:
                _wait("a SuperNode training", lambda: any(_unanswered_train(procs.log(name)) for k, (name, _) in
                                                          current.items() if k.startswith("node")), 600, procs,
                      {"superlink": sl}, poll=0.1)
                kill(sl)
                killed_superlink[0] = True
                event(f"SuperLink killed while SuperNodes train (rounds recorded: 0-{rounds_recorded()})")
                assert rounds_recorded() < last
                sl = start_superlink("superlink-again")
                info = wait_for_run(runs[0], env=env["operator"], timeout=300, poll=2.0)
                assert info["status"] == "finished:failed", info  # Flower does not continue it
                nodes = {name: q for k, (name, q) in current.items() if k.startswith("node")}
                _wait("every SuperNode back", lambda: _nodes_online(env["operator"]) == n, 600, procs,
                      {"superlink-again": sl, **nodes}, poll=2.0,
                      report=lambda: (_node_report(env["operator"], procs, nodes) + "\n--- superlink-again\n"
                                      + procs.log("superlink-again")[-1500:]))
                p = _flwr(b.plan.run_command(str(REPO), {**run_config, "resume": True}), env["operator"])
                assert p.returncode == 0, p.stdout + p.stderr
                runs.append(_json_out(p.stdout)["run-id"])
                event(f"SuperLink back, run resumed as {runs[-1]}")
            if r == drop_round and dropper is not None and dropped is None:
                dropped = threading.Thread(target=drop, args=(dropper,), daemon=True)
                dropped.start()
                event(f"node{dropper} without network for {DROP_S:g} s")
            if r == rogue_round and rogue is None:
                key, _ = create_node_key(tmp_path / "rogue" / "node.key")
                cmd = b.plan.supernode_command(Node(0, private_key=str(key), port=deploy.SUPERNODE_PORT if net else
                                                    _free_port()), ca_cert=str(b.operator / "ca.crt"))
                rogue = procs.start("rogue", cmd, key.parent, env["rogue"], ns("rogue"))
                event("an unregistered SuperNode tries to join")
            if r < last and r != superlink_round:  # the last round is left alone (a kill after its training)
                v = victims[r % len(victims)]
                name, p = current[f"node{v}"]
                try:
                    ledger = tmp_path / "runs" / "deploy" / f"clients.node-{v}.traffic"  # the nodes' out_dir here
                    _wait(f"node{v} training in round {r}", lambda: (_unanswered_train(procs.log(name)) and
                          _in_clientapp(ledger)) or rounds_recorded() >= r + 1, 600, procs, {}, poll=0.02)
                except pytest.fail.Exception:
                    missed.append(r)
                else:
                    if rounds_recorded() < r + 1:
                        kill(p)
                        kills.append(v)
                        event(f"node{v} killed while training (round {r})")
                        start_node(v, f"node{v}-again{r}")
                    else:
                        missed.append(r)
            r += 1
        info = wait_for_run(runs[-1], env=env["operator"], timeout=600 + 120 * last, poll=2.0)
        assert info["status"] == "finished:completed", (info, procs.log(current["superlink"][0])[-3000:])
        event("run finished")
        if dropped is not None:
            dropped.join(timeout=DROP_S + 30)
        memory.sample()
    if rogue is not None:
        rc = rogue.wait(timeout=120)
        assert rc != 0 and "Failed to activate SuperNode" in procs.log("rogue"), procs.log("rogue")[-2000:]
        assert "No SuperNode found with the given public key" in procs.log("superlink") + procs.log("superlink-again")

    run_dir = tmp_path / "runs" / "deploy"
    rounds = read_rounds(run_dir)
    assert [r["round"] for r in rounds] == list(range(last + 1))
    assert (run_dir / "summary.json").is_file()
    failures: dict[str, int] = {}
    for row in rounds:
        for f in row.get("failures") or ():
            assert f["reason"]
            key = f"{f['phase']} {f['kind']}"
            failures[key] = failures.get(key, 0) + 1
    infos = [run_info(r, env=env["operator"]) for r in runs]
    traffic = json.loads(record_flower_traffic(run_dir, infos).read_text())

    # the same federation simulated with the deployment's failures (replay_failures), FEDFIT_SOAK_SEEDS seeds
    from strategies.simulate import simulate

    from fedfit.config import load_config

    sims = []
    for seed in range(SEEDS):
        simulate(load_config(overrides={**run_config, "engine": "inline", "seed": seed, "name": f"sim{seed}",
                                        "out_dir": str(tmp_path / "sim"), "replay_failures": str(run_dir)}))
        sims.append(read_rounds(tmp_path / "sim" / f"sim{seed}"))
    sim0 = sims[0]
    assert [sorted((f["phase"], f["client"]) for f in r["failures"]) for r in sim0] == [
        sorted((f["phase"], f["client"]) for f in r["failures"] if f["client"] >= 0) for r in rounds]
    finals = [s[-1]["acc_mean"] for s in sims]
    report = {
        "nodes": n, "rounds": last, "network": "netns" if net else "loopback", "timeout_s": TIMEOUT_S,
        "supernode_kills": len(kills), "kill_missed_rounds": missed, "superlink_kills": 1, "runs": runs,
        "drop_s": DROP_S if dropper is not None else 0, "rogue_refused": rogue is not None,
        "failures": failures, "clients_per_round": [r.get("clients") for r in rounds],
        "eval_clients_per_round": [r.get("eval_clients") for r in rounds],
        "flower_per_run": [int(i["network-traffic"]["total-bytes"]) for i in infos],
        "resume_bytes_wire": sum(r.get("resume_bytes_wire", 0) for r in rounds),
        **{k: v for k, v in traffic.items() if k.startswith(("flower_", "fedfit_"))},
        "peak_tree_rss_mb": {k: round(v, 1) for k, v in sorted(memory.peak_tree.items())},
        "peak_tree_pss_mb": {k: round(v, 1) for k, v in sorted(memory.peak_tree_pss.items())},
        "peak_process_mb": {k: round(v, 1) for k, v in sorted(memory.peak_kind.items())},
        "accuracy": [r["acc_mean"] for r in rounds], "sim_accuracy": [r["acc_mean"] for r in sim0],
        "sim_final_by_seed": finals, "seconds": round(time.monotonic() - t0, 1), "events": events}
    for name, peaks in (("rss", memory.peak_tree), ("pss", memory.peak_tree_pss)):
        nodes_mb = [v for k, v in peaks.items() if k.startswith("node")]
        if nodes_mb:
            report[f"peak_supernode_tree_{name}_mb"] = {"max": round(max(nodes_mb), 1),
                                                        "mean": round(sum(nodes_mb) / len(nodes_mb), 1)}
    if os.environ.get("FEDFIT_SOAK_REPORT"):
        Path(os.environ["FEDFIT_SOAK_REPORT"]).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nsoak: {json.dumps({k: v for k, v in report.items() if k != 'events'})}")
    print("\n".join(events))
    assert kills or last < 2, f"no SuperNode was killed while training (missed rounds {missed})"
    # the deployment learns what the same federation with the same failures learns in simulation
    assert abs(rounds[-1]["acc_mean"] - sim0[-1]["acc_mean"]) <= 0.03, (rounds[-1]["acc_mean"], sim0[-1]["acc_mean"])
    assert traffic["flower_total_bytes"] > 0 and traffic["fedfit_setup_resume_wire_bytes"] > 0
    # what the SuperNodes counted (clients.ledger), per Flower run, against Flower's figure: within 0.5% at 16
    # SuperNodes or more (the soak at scale); 10% in the short soak, where the few replies in flight when the
    # SuperLink is killed (counted by their SuperNodes, never received) are a large share (docs/reliability.md)
    tolerance = 0.005 if n >= 16 else 0.10
    for run in traffic["per_run"]:
        assert abs(run["flower_over_node_counted"] - 1) < tolerance, traffic
