"""Real Flower deployment: a SuperLink and two SuperNodes as separate processes, TLS and SuperNode
authentication on, started from the scripts ``fedfit deploy init`` writes.

Where the runner allows it (root with CAP_NET_ADMIN, ``ip netns`` and veth work) every Flower process
gets its own network namespace - its own loopback, its own address on a private bridge - so the
SuperNodes reach the SuperLink only over the (veth) network, like separate machines; elsewhere all of
them share loopback (distinct ports). ``FEDFIT_DEPLOY_NETNS=0`` forces loopback, ``=1`` requires
namespaces. Every process the test starts, and everything they spawn (SuperExec, ServerApp and
ClientApp processes), carries a marker in its environment; all of them are stopped by process id at
the end (TERM, wait, KILL), also when the test fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedfit import deploy
from fedfit.deploy import Node, create_node_key, init_deployment, record_flower_traffic, run_info, wait_for_run
from fedfit.deploy.traffic import _json_out
from fedfit.results import read_rounds

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent        # the venv's bin: flower-superlink, flower-supernode, flwr
MARK = "FEDFIT_DEPLOY_TEST"
RUN_CONFIG = {"dataset": "digits", "image_size": 32, "num_clients": 2, "clients_per_round": 2, "rounds": 2,
              "new_users": 0, "local_steps": 2, "queries": 5, "eval_clients": 0, "global_eval": False,
              "name": "deploy", "timeout_s": 300}

WARM = os.environ.get("FEDFIT_DEPLOY_COLD", "") != "1"  # FEDFIT_DEPLOY_COLD=1: no warm workers (to measure them)

needs_flower_bins = pytest.mark.skipif(
    not all((BIN / b).exists() for b in ("flower-superlink", "flower-supernode", "flwr")) or not os.path.isdir("/proc"),
    reason="needs the flwr executables beside this Python and /proc")


# --------------------------------------------------------------------------- processes
def _stat(pid: int) -> tuple[int, str] | None:
    """(start time, state) of a live process, None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]), fields[0]


class Processes:
    """Starts processes and finds all their descendants by an environment marker (it survives
    re-parenting: Flower starts SuperExec in a new session and ServerApp / ClientApp processes below it)."""

    def __init__(self, token: str, logs: Path):
        self.token, self.logs = token, logs
        self.popens: list[subprocess.Popen] = []
        self.seen: dict[int, int] = {}   # pid -> start time

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, MARK: self.token, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "GRPC_VERBOSITY": "ERROR",
               "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **deploy.RUNTIME_ENV, **extra}
        env.pop("FEDFIT_VENV", None)
        return env

    def start(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str], netns: str | None = None) -> subprocess.Popen:
        full = (["ip", "netns", "exec", netns] if netns else []) + cmd
        with open(self.logs / f"{name}.log", "wb") as log:
            p = subprocess.Popen(full, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.popens.append(p)
        self.scan()
        return p

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def scan(self) -> dict[int, int]:
        """Live processes carrying this test's marker: pid -> start time (also remembered)."""
        found = {}
        needle = f"{MARK}={self.token}".encode()
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == os.getpid():
                continue
            try:
                environ = Path(f"/proc/{p}/environ").read_bytes()
            except OSError:
                continue
            st = _stat(int(p))
            if st and needle in environ.split(b"\0") and st[1] != "Z":
                found[int(p)] = st[0]
        self.seen.update(found)
        return found

    def alive(self) -> dict[int, int]:
        """Marked processes still running (remembered ones too, checked against their start time)."""
        live = self.scan()
        for pid, start in self.seen.items():
            st = _stat(pid)
            if st and st[0] == start and st[1] != "Z":
                live[pid] = start
        return live

    def _signal(self, sig: int) -> None:
        for pid, start in self.alive().items():
            st = _stat(pid)
            if st and st[0] == start:  # the same process, not a recycled pid
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def stop_all(self, grace: float = 10.0) -> dict[int, int]:
        """TERM every marked process, wait up to ``grace`` s, KILL what is left; returns survivors."""
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.2)
        if self.alive():
            self._signal(signal.SIGKILL)
            time.sleep(1.0)
        self._reap()
        return self.alive()

    def _reap(self) -> None:
        for p in self.popens:
            if p.poll() is None:
                try:
                    p.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass


# --------------------------------------------------------------------------- network
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def netns_available() -> bool:
    """Root, CAP_NET_ADMIN, `ip netns` and veth pairs all work here."""
    want = os.environ.get("FEDFIT_DEPLOY_NETNS", "")
    if want == "0":
        return False
    ok = os.geteuid() == 0 and shutil.which("ip") is not None
    if ok:
        probe = f"ffprobe{os.getpid() % 100000}"
        try:
            ok = _ip("netns", "add", probe, check=False).returncode == 0
            if ok:
                ok = _ip("link", "add", f"{probe}a", "type", "veth", "peer", "name", f"{probe}b", "netns", probe,
                         check=False).returncode == 0
        finally:
            _ip("link", "del", f"{probe}a", check=False)
            _ip("netns", "del", probe, check=False)
    if want == "1" and not ok:
        pytest.fail("FEDFIT_DEPLOY_NETNS=1 but network namespaces cannot be created here")
    return ok


class Network:
    """A bridge in the root namespace and one namespace per Flower process, each with its own veth,
    address and loopback. The test itself (the operator) reaches them over the bridge."""

    def __init__(self, token: str, names: list[str]):
        used = _ip("-4", "route").stdout
        third = next(x for x in range(213, 254) if f"10.{x}." not in used)
        self.prefix, self.bridge, self.token = f"10.{third}.7", f"ffb{token}", token
        self.ns: dict[str, str] = {}
        self.addr: dict[str, str] = {}
        self.veths: list[str] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for k, name in enumerate(names):
            ns, host, peer, addr = f"ff{token}-{name}", f"ffh{k}{token}", f"ffp{k}{token}", f"{self.prefix}.{10 + k}"
            _ip("netns", "add", ns)
            self.ns[name] = ns
            _ip("link", "add", host, "type", "veth", "peer", "name", peer)
            self.veths.append(host)
            _ip("link", "set", host, "master", self.bridge)
            _ip("link", "set", host, "up")
            _ip("link", "set", peer, "netns", ns)
            _ip("-n", ns, "link", "set", peer, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", f"{self.prefix}.1")
            self.addr[name] = addr

    def destroy(self) -> None:
        for ns in self.ns.values():
            _ip("netns", "del", ns, check=False)
        for v in self.veths:
            _ip("link", "del", v, check=False)
        _ip("link", "del", self.bridge, check=False)


# --------------------------------------------------------------------------- helpers
def _tls_ok(host: str, port: int, ca: Path) -> bool:
    """A TLS handshake that verifies the SuperLink's certificate (chain to our CA, name = host)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection((host, port), timeout=2) as s, ctx.wrap_socket(s, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


def _wait(what: str, cond, timeout: float, procs: Processes, watch: dict[str, subprocess.Popen], poll: float = 0.5,
          report=None):
    """Wait until ``cond()``; fails when a watched process exits or at ``timeout`` (s), with the watched
    processes' log tails, or ``report()`` where given."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        for name, p in watch.items():
            if p.poll() is not None:
                detail = report() if report else procs.log(name)[-3000:]
                pytest.fail(f"{name} exited ({p.returncode}) while waiting for {what}:\n{detail}")
        if time.monotonic() > deadline:
            detail = report() if report else "\n".join(f"--- {n}\n{procs.log(n)[-2000:]}" for n in watch)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")
        time.sleep(poll)


def _flwr(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "flwr"), *args[1:]] if args[0] == "flwr" else args, env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def _nodes_online(env: dict[str, str]) -> int:
    p = _flwr(["flwr", "supernode", "ls", deploy.CONNECTION, "--format", "json"], env)
    try:
        nodes = _json_out(p.stdout).get("nodes", [])
    except deploy.DeployError:
        return 0
    return sum(n.get("status") == "online" for n in nodes)


def _user_flwr_config() -> bytes | None:
    path = Path.home() / ".flwr" / "config.toml"
    return path.read_bytes() if path.exists() else None


# --------------------------------------------------------------------------- the fixture
@contextlib.contextmanager
def processes_and_network(tmp_path: Path, names: list[str]):
    """Yields (processes, network of ``names`` or None where namespaces cannot be made); stops every marked
    process and removes the namespaces."""
    token = secrets.token_hex(3)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(token, logs)
    net = None
    try:
        if netns_available():
            net = Network(token, names)
        yield procs, net
    finally:
        left = procs.stop_all()
        if net is not None:
            net.destroy()
        assert not left, f"processes still running after SIGKILL: {left}"


@pytest.fixture
def cluster(tmp_path):
    with processes_and_network(tmp_path, ["superlink", "node0", "node1", "rogue"]) as both:
        yield both


@needs_flower_bins
def test_superlink_and_two_supernodes_tls_auth_two_rounds(cluster, tmp_path):
    procs, net = cluster
    t_start = time.monotonic()
    user_cfg_before = _user_flwr_config()
    mode = "netns" if net else "loopback"
    host = net.addr["superlink"] if net else "127.0.0.1"
    port = deploy.SUPERLINK_PORT if net else _free_port()
    node_ports = [deploy.SUPERNODE_PORT] * 2 if net else [_free_port(), _free_port()]

    # --- the operator's side: certificates, keys, scripts (as `fedfit deploy init` writes them)
    run_config = {**RUN_CONFIG, "out_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache-server")}
    b = init_deployment(tmp_path / "deploy", host, 2, port=port, node_ports=node_ports, same_host=net is None,
                        node_config={"cache-dir": str(tmp_path / "cache-node{i}")}, run_config=run_config,
                        app_dir=str(REPO), warm=WARM)
    cmd = b.plan.superlink_command()
    assert {"--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--enable-supernode-auth"} <= set(cmd)
    assert "--insecure" not in cmd
    homes = {n: tmp_path / f"flwr-home-{n}" for n in ("superlink", "node0", "node1", "rogue", "operator")}
    env = {n: procs.env(FLWR_HOME=str(h), FEDFIT_CACHE=str(tmp_path / f"cache-{n}")) for n, h in homes.items()}
    ns = (lambda n: net.ns[n]) if net else (lambda n: None)

    # --- SuperLink (its own namespace / machine)
    sl = procs.start("superlink", ["bash", str(b.superlink / "start.sh")], b.superlink, env["superlink"], ns("superlink"))
    _wait("the SuperLink's TLS port", lambda: _tls_ok(host, port, b.operator / "ca.crt"), 60, procs, {"superlink": sl})
    assert not _tls_ok(host, port, _other_ca(tmp_path)), "a certificate from another CA must not verify"

    # --- operator: flwr connection in a private FLWR_HOME, register the two SuperNodes' public keys
    p = subprocess.run(["bash", str(b.operator / "connect.sh")], env=env["operator"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    conf = (homes["operator"] / "config.toml").read_text()
    assert f"[superlink.{deploy.CONNECTION}]" in conf and "root-certificates" in conf and "insecure" not in conf
    p = subprocess.run(["bash", str(b.operator / "register.sh")], env=env["operator"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stdout.count("registered successfully") == 2, p.stdout + p.stderr

    # --- two SuperNodes (own namespaces / machines), started from their bundles
    nodes = {f"node{i}": procs.start(f"node{i}", ["bash", str(d / "start.sh")], d, env[f"node{i}"], ns(f"node{i}"))
             for i, d in enumerate(b.supernodes)}
    # --- a SuperNode whose key was never registered is refused
    rogue_key, _ = create_node_key(tmp_path / "rogue" / "node.key")
    rogue_cmd = b.plan.supernode_command(Node(0, private_key=str(rogue_key), port=_free_port() if not net else 9095),
                                         ca_cert=str(b.operator / "ca.crt"))
    rogue = procs.start("rogue", rogue_cmd, rogue_key.parent, env["rogue"], ns("rogue"))
    try:
        rc = rogue.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the unregistered SuperNode was not refused within 90 s:\n{procs.log('rogue')[-3000:]}")
    assert rc != 0, procs.log("rogue")
    assert "Failed to activate SuperNode" in procs.log("rogue"), procs.log("rogue")
    assert "No SuperNode found with the given public key" in procs.log("superlink")
    _wait("both registered SuperNodes online", lambda: _nodes_online(env["operator"]) == 2, 90, procs,
          {"superlink": sl, **nodes}, poll=1.0)
    t_ready = time.monotonic()

    # --- the run: `flwr run <app> fedfit --run-config ...` (what operator/run.sh does)
    p = _flwr(b.plan.run_command(str(REPO), run_config), env["operator"])
    assert p.returncode == 0, p.stdout + p.stderr
    run_id = _json_out(p.stdout)["run-id"]
    info = wait_for_run(run_id, env=env["operator"], timeout=600, poll=2.0)
    assert info["status"] == "finished:completed", (info, procs.log("superlink")[-3000:])
    t_run = time.monotonic()

    # --- results: the same files and metering as a simulation
    state_size = _state_size(run_config)  # e.g. 20,544 FiLM numbers on Lite0 (+ 2 mixing weights with LDA / QDA)
    run_dir = tmp_path / "runs" / "deploy"
    rounds = read_rounds(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["state_size"] == state_size
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["bytes_up_wire"] == 0 and rounds[0]["eval_clients"] == 2
    for r in rounds[1:]:
        assert r["clients"] == 2 and r["rejected"] == 0 and r["eval_clients"] == 2
        # one packed fp32 state per client each way: exactly the simulation's formula (tests/test_simulation.py)
        assert r["bytes_up_payload"] == r["bytes_down_payload"] == 2 * 4 * state_size
        assert r["bytes_up_payload"] < r["bytes_up_wire"] <= 1.05 * r["bytes_up_payload"]
        assert 0.0 <= r["acc_mean"] <= 1.0 and r["train_loss"] > 0
        assert r["trained"] == [0, 1] and set(r["per_client"]) == {"0", "1"}  # partition ids, not node ids
    # wire: the simulation's training message to within its metadata (ids / timestamps of other lengths)
    sim_wire = _sim_train_message_wire(state_size)
    for r in rounds[1:]:
        for per in r["per_client"].values():
            assert abs(per["down_wire"] - sim_wire) <= 32, (per, sim_wire)
    assert rounds[2]["cum_bytes_wire"] == sum(r["bytes_up_wire"] + r["bytes_down_wire"] for r in rounds)
    state = np.load(run_dir / "final_state.npz")
    assert sum(v.size for v in state.values()) == state_size

    # --- Flower's own per-run figure beside fedfit's (operator side: flwr ls --format json)
    traffic = json.loads(record_flower_traffic(run_dir, run_info(run_id, env=env["operator"])).read_text())
    assert traffic["flower_inbound_bytes"] > 0 and traffic["flower_outbound_bytes"] > 0
    assert 0.8 < traffic["flower_over_fedfit"] < 1.25, traffic
    # what the SuperNodes counted themselves (clients.ledger) against what the SuperLink counted
    assert abs(traffic["flower_over_node_counted"] - 1) < 0.005, traffic
    assert _user_flwr_config() == user_cfg_before, "the user's ~/.flwr/config.toml must not be touched"

    # warm ClientApps: each SuperNode's worker answered every message its ClientApps got (none handled alone)
    answered = [procs.log(f"node{i}").count("fedfit warm-worker: ") - 1 for i in range(2)]
    # the hello query, an evaluation per round (0 too), a training per round, the last hello (the byte ledgers)
    per_node = 1 + len(rounds) + (len(rounds) - 1) + 1
    if WARM:
        assert answered == [per_node, per_node], (answered, procs.log("node0")[-3000:])
        assert "handling the message in this process" not in procs.log("node0") + procs.log("node1")
    else:
        assert answered == [-1, -1]
    left = procs.stop_all()
    assert not left, f"processes left running: {left}"
    t_stop = time.monotonic()

    # --- the same configuration simulated: same payload, same learning, wire within ids. In this process
    # (engine = inline: no Ray to start; its messages have the other engines' sizes, its losses agree to float
    # rounding: torch's thread count here differs from an actor's single thread)
    from strategies.simulate import simulate

    from fedfit.config import load_config

    simulate(load_config(overrides={**run_config, "name": "sim", "out_dir": str(tmp_path / "sim-runs"),
                                    "engine": "inline"}))
    sim = read_rounds(tmp_path / "sim-runs" / "sim")
    assert len(sim) == len(rounds)
    for d, s in zip(rounds, sim):
        assert d["bytes_up_payload"] == s["bytes_up_payload"] and d["bytes_down_payload"] == s["bytes_down_payload"]
        # wire: only message metadata differs, and Flower sends a message's metadata twice (in the message list
        # and in the message object). Deployment: 64-bit run and task ids (simulation: 1), 64-character message
        # ids (simulation: 36-character UUIDs; a reply reaches the server with its own id set). Measured with
        # flwr 1.41: +42 B down, +166 B up per message (the code that sets these ids is unchanged in 1.42).
        # A deployed reply also carries its SuperNode's byte ledger in its metrics (clients.ledger): ~94 B.
        for key in ("bytes_up_wire", "bytes_down_wire", "eval_bytes_up_wire", "eval_bytes_down_wire"):
            messages = d["clients"] if key.startswith("bytes") else d["eval_clients"]
            assert abs(d[key] - s[key]) <= (192 + (96 if "_up_" in key else 0)) * messages, (key, d[key], s[key])
        assert d["acc_mean"] == pytest.approx(s["acc_mean"], abs=0.021)
        if s["train_loss"] is not None:
            assert d["train_loss"] == pytest.approx(s["train_loss"], rel=1e-3)
    print(f"\ndeployment ({mode}, {'warm' if WARM else 'cold'} ClientApps): seconds per round "
          f"{[round(r['seconds'], 2) for r in rounds]}; ready in {t_ready - t_start:.0f} s, run {t_run - t_ready:.0f} s, simulation "
          f"{time.monotonic() - t_stop:.0f} s; per round: train up {rounds[1]['bytes_up_wire']} B wire "
          f"(simulation {sim[1]['bytes_up_wire']}), {rounds[1]['bytes_up_payload']} B payload (simulation "
          f"{sim[1]['bytes_up_payload']}), down {rounds[1]['bytes_down_wire']} (simulation {sim[1]['bytes_down_wire']}); "
          f"Flower's figure {traffic['flower_total_bytes']} B for the run vs fedfit's {traffic['fedfit_total_wire_bytes']} B "
          f"(x{traffic['flower_over_fedfit']:.4f}; the SuperNodes' own count {traffic['fedfit_node_counted_wire_bytes']} B, "
          f"x{traffic['flower_over_node_counted']:.4f}); accuracy {[r['acc_mean'] for r in rounds]} vs "
          f"{[r['acc_mean'] for r in sim]}")


@needs_flower_bins
@pytest.mark.slow
def _layout(cfg: dict):
    from fedfit.config import load_config
    from fedfit.federated import initial_state

    return initial_state(load_config(overrides=cfg))[0]


def _state_size(cfg: dict) -> int:
    return _layout(cfg).size


def _sim_train_message_wire(state_size: int) -> int:
    """fedfit's wire size of one fp32 training message as the simulation builds and meters it (node id and
    run id varints are as long as real 64-bit ids)."""
    from flwr.app import ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    from fedfit import wire
    from fedfit.config import load_config
    from strategies import create_strategy
    from strategies.codec_layer import CodecGrid
    from fedfit.wire import wire_bytes

    class Grid:
        def get_node_ids(self):
            return [2**63 + 12345]

    saved = TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 2**63 + 1, 2**63 + 2, 0
    try:
        strategy = create_strategy(load_config(overrides={**RUN_CONFIG, "num_clients": 1, "clients_per_round": 1}))
        msgs = list(strategy.configure_train(1, wire.state_record(np.ones(state_size, np.float32)),
                                             ConfigRecord({"phase": "train"}), Grid()))
        CodecGrid(Grid(), "fp32", "fp32", False, _layout(RUN_CONFIG).fingerprint, state_size)._encode(msgs)
        return wire_bytes(msgs[0])
    finally:
        TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def _other_ca(tmp_path: Path) -> Path:
    crt, _ = deploy.create_ca(tmp_path / "other-ca")
    return crt


# --------------------------------------------------------------------------- the helpers, checked against flwr 1.41 / 1.42
def test_package_imports_without_flower_or_torch():
    modules = ["fedfit.deploy", *(f"fedfit.deploy.{m}" for m in ("certificates", "common", "connection", "files",
                                                                 "plan", "scripts", "traffic"))]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flwr', 'torch', 'numpy') or "
            "(m.startswith('fedfit.') and not m.startswith('fedfit.deploy'))))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"  # operator tooling: nothing of Flower, torch or fedfit's core


def test_certificates_names_and_chain(tmp_path):
    from cryptography import x509

    ca_crt, ca_key = deploy.create_ca(tmp_path / "ca")
    crt, key = deploy.create_server_cert(tmp_path / "sl", ca_crt, ca_key, ["server.lan", "10.1.2.3", "::1"])
    dns, ips = deploy.certificate_names(crt)
    assert dns == ["localhost", "server.lan"] and ips == ["127.0.0.1", "10.1.2.3", "::1"]
    ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    x509.load_pem_x509_certificate(crt.read_bytes()).verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for private in (ca_key, key):
        assert private.stat().st_mode & 0o777 == 0o600
    with pytest.raises(deploy.DeployError):
        deploy.split_names(["bad name!"])


def test_node_key_is_what_flower_loads(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key

    priv, pub = create_node_key(tmp_path / "node.key", comment="n0")
    key = load_ssh_private_key(priv.read_bytes(), None)  # what flower-supernode does
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert pub.read_text().startswith("ecdsa-sha2-nistp384 ") and try_load_public_key(pub)  # flwr supernode register
    assert priv.stat().st_mode & 0o777 == 0o600


def test_commands_parse_with_flowers_own_parsers(tmp_path):
    from flwr.common.config import parse_config_args
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    b = init_deployment(tmp_path / "d", "server.lan", 3, same_host=True, node_config={"cache-dir": "/data/c{i}"},
                        run_config={"dataset": "digits", "global_eval": False, "lr": 0.001})
    sl = _parse_args_run_superlink().parse_args(b.plan.superlink_command()[1:])
    assert (sl.ssl_ca_certfile, sl.ssl_certfile, sl.ssl_keyfile) == ("ca.crt", "server.crt", "server.key")
    assert sl.enable_supernode_auth and not sl.insecure and not sl.runtime_dependency_install
    assert (sl.host, sl.port) == ("0.0.0.0", deploy.SUPERLINK_PORT)
    ports = set()
    for node in b.plan.nodes:
        cmd = b.plan.supernode_command(node)
        assert cmd[:2] == ["fedfit", "supernode"]  # flower-supernode's options, clients.supernode's fix
        sn = _parse_args_run_supernode().parse_args(cmd[2:])
        assert sn.superlink == f"server.lan:{deploy.SUPERLINK_PORT}" and not sn.insecure
        assert (sn.root_certificates, sn.auth_supernode_private_key) == ("ca.crt", "node.key")
        assert parse_config_args([sn.node_config]) == {"partition-id": node.index, "cache-dir": f"/data/c{node.index}"}
        ports.add(sn.port)
    assert len(ports) == 3  # one host: distinct Runtime API ports
    run = b.plan.run_command(".", {"dataset": "digits", "global_eval": False})
    assert run[:4] == ["flwr", "run", ".", deploy.CONNECTION]
    assert parse_config_args([run[run.index("--run-config") + 1]]) == {
        "num_clients": 3, "clients_per_round": 3, "dataset": "digits", "global_eval": False}
    for i, d in enumerate(b.supernodes):  # each client machine's folder: CA, its own private key, start.sh
        assert sorted(p.name for p in d.iterdir()) == ["ca.crt", "node.key", "start.sh"]
    assert sorted(p.name for p in (b.operator / "keys").iterdir()) == [f"supernode-{i}.pub" for i in range(3)]
    assert "ca.key" not in {p.name for p in b.superlink.iterdir()}
    reg = (b.operator / "register.sh").read_text()
    assert all(f"flwr supernode register keys/supernode-{i}.pub fedfit" in reg for i in range(3))
    assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in (b.operator / "run.sh").read_text()
    with pytest.raises(deploy.DeployError, match="not empty"):
        init_deployment(tmp_path / "d", "server.lan", 1)


def test_insecure_only_when_asked(tmp_path):
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

    b = init_deployment(tmp_path / "d", "127.0.0.1", 1, insecure=True)
    sl = _parse_args_run_superlink().parse_args(b.plan.superlink_command()[1:])
    assert sl.insecure and not sl.enable_supernode_auth and sl.ssl_certfile is None
    assert "--insecure" in b.plan.supernode_command(0) and "--auth-supernode-private-key" not in b.plan.supernode_command(0)
    assert not (tmp_path / "d" / "ca").exists()


def test_connection_goes_to_flwr_home_not_pyproject(tmp_path, monkeypatch):
    from flwr.cli.flower_config import read_superlink_connection

    home = tmp_path / "flwr-home"
    monkeypatch.setenv("FLWR_HOME", str(home))
    pyproject = (REPO / "pyproject.toml").read_bytes()
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    plan = deploy.Plan(address="server.lan:9092", nodes=[])
    path = deploy.write_connection(plan, ca)
    assert path == home / "config.toml"
    path.write_text(path.read_text() + '\n[superlink.other]\naddress = "x:1"\ninsecure = true\n')
    deploy.write_connection(deploy.Plan(address="server.lan:9999", nodes=[]), ca)  # replaces, keeps the others
    conn = read_superlink_connection("fedfit")
    assert (conn.address, conn.root_certificates, conn.insecure) == ("server.lan:9999", str(ca.resolve()), False)
    assert read_superlink_connection("other").address == "x:1" and read_superlink_connection().name == "local"
    assert (REPO / "pyproject.toml").read_bytes() == pyproject


def test_flower_traffic_record(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"round": 0, "bytes_up_wire": 0, "bytes_down_wire": 0, "eval_bytes_up_wire": 10, "eval_bytes_down_wire": 20},
            {"round": 1, "bytes_up_wire": 100, "bytes_down_wire": 200, "eval_bytes_up_wire": 10, "eval_bytes_down_wire": 20}]
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = {"run-id": "7", "status": "finished:completed",
            "network-traffic": {"inbound-bytes": 121, "outbound-bytes": 242, "total-bytes": 363}}
    rec = json.loads(record_flower_traffic(run, info).read_text())
    assert (rec["fedfit_up_wire_bytes"], rec["fedfit_down_wire_bytes"], rec["flower_total_bytes"]) == (120, 240, 363)
    assert rec["flower_over_fedfit"] == pytest.approx(363 / 360)
    # a resumed run: its hello and resume bytes count, and Flower's figures of both of its Flower runs
    rows[1].update(setup_bytes_wire=7, resume_bytes_wire=33)
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = {"run-id": "6", "status": "finished:failed",
             "network-traffic": {"inbound-bytes": 10, "outbound-bytes": 30, "total-bytes": 40}}
    rec = json.loads(record_flower_traffic(run, [first, info]).read_text())
    assert (rec["runs"], rec["flower_total_bytes"], rec["fedfit_total_wire_bytes"]) == (["6", "7"], 403, 400)
    assert rec["flower_over_fedfit"] == pytest.approx(403 / 400)


def test_cli_deploy_init_and_errors(tmp_path, capsys):
    from fedfit.app.cli import main

    assert main(["deploy", "init", str(tmp_path / "d"), "--nodes", "2", "--superlink-host", "10.0.0.5",
                 "--run-config", "dataset=digits", "rounds=3"]) == 0
    out = capsys.readouterr().out
    assert "TLS and SuperNode authentication on" in out and "10.0.0.5:9092" in out
    assert "rounds=3" in (tmp_path / "d" / "operator" / "run.sh").read_text()
    assert main(["deploy", "init", str(tmp_path / "e"), "--nodes", "2", "--run-config", "bogus=1"]) == 2
    assert main(["deploy", "init", str(tmp_path / "d"), "--nodes", "2"]) == 2  # never overwrites a CA
    assert main(["deploy", "node-key", str(tmp_path / "k" / "node.key")]) == 0
    assert (tmp_path / "k" / "node.key.pub").exists()
