"""Operator side of a real deployment (one SuperLink, N SuperNodes on other machines).

No Flower import: this module makes the TLS certificates and the SuperNode keys (with
``cryptography``, which Flower depends on anyway), writes the exact shell commands for every
machine, adds the SuperLink connection to the ``flwr`` CLI's own config file, and reads Flower's
per-run traffic figure by calling the ``flwr`` CLI as a subprocess.

Flower 1.41 facts this relies on (checked against its CLI and sources):

* ``flower-superlink`` serves the Fleet, Control and Runtime APIs on one HTTPS port
  (``--host`` / ``--port``, default 127.0.0.1:8000); TLS: ``--ssl-ca-certfile``, ``--ssl-certfile``,
  ``--ssl-keyfile``; node authentication: ``--enable-supernode-auth`` (refused without TLS). Its
  SuperExec child connects back to ``127.0.0.1:PORT`` when it listens on 0.0.0.0, so the server
  certificate always names localhost and 127.0.0.1 as well.
* ``flower-supernode --superlink HOST:PORT --root-certificates CA --auth-supernode-private-key KEY
  --node-config '...'``; its own Runtime API listens on ``--host`` / ``--port`` (default 9094), so
  SuperNodes sharing one host need distinct ``--port`` values (``--clientappio-api-address`` is
  gone in 1.41).
* Node keys: EC keys on a NIST curve; the private key in OpenSSH format, the public key in OpenSSH
  format (``ecdsa-sha2-nistp384 ...``), registered with ``flwr supernode register KEY.pub CONN``.
* ``flwr`` CLI connections live in ``$FLWR_HOME/config.toml`` (default ``~/.flwr``) as
  ``[superlink.NAME]`` tables, never in pyproject.toml (a ``[tool.flwr.federations]`` section
  there makes ``flwr`` rewrite pyproject.toml).
* ``flwr ls CONN --run-id ID --format json`` reports the run's Fleet traffic (``network-traffic``:
  inbound / outbound bytes as the SuperLink counted them, whole run, no per-round split).
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import os
import re
import shlex
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

CONNECTION = "fedfit"                  # default name of the flwr CLI connection
SUPERLINK_PORT = 9092                  # one HTTPS port for Fleet, Control and Runtime APIs
SUPERNODE_PORT = 9094                  # each SuperNode's local Runtime API (Flower's default)
RUNTIME_ENV = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}  # never `uv sync` a fresh env
DEFAULT_FLOWER_CONFIG = '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'


class DeployError(ValueError):
    """A bad deployment argument (one line, shown by ``fedfit deploy``)."""


# --------------------------------------------------------------------------- keys and certificates
def _write_private(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path


def _write_public(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _name(cn: str):
    from cryptography.x509.oid import NameOID
    from cryptography import x509

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedfit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def create_ca(directory: str | Path, common_name: str = "fedfit deployment CA", days: int = 3650) -> tuple[Path, Path]:
    """A self-signed CA: ``ca.crt`` (copy it to every machine) and ``ca.key`` (keep it on the operator's).
    Returns (crt, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = Path(directory)
    key = ec.generate_private_key(ec.SECP384R1())
    name = _name(common_name)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    crt = _write_public(d / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    k = _write_private(d / "ca.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return crt, k


def split_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split host names into (DNS names, IP addresses), always including localhost and 127.0.0.1
    (the SuperLink's own SuperExec connects to 127.0.0.1), duplicates removed, order kept."""
    dns: list[str] = []
    ips: list[str] = []
    for n in ["localhost", "127.0.0.1", *names]:
        n = n.strip().strip("[]")
        if not n:
            continue
        try:
            ip = str(ipaddress.ip_address(n))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?", n):
                raise DeployError(f"not a DNS name or IP address: {n!r}") from None
            if n.lower() not in (x.lower() for x in dns):
                dns.append(n)
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips


def create_server_cert(directory: str | Path, ca_crt: str | Path, ca_key: str | Path, names: Sequence[str] = (),
                       days: int = 825) -> tuple[Path, Path]:
    """``server.crt`` / ``server.key`` for the SuperLink, signed by the CA, valid for ``names`` (DNS names
    and IP addresses the SuperNodes and the operator use to reach it) plus localhost / 127.0.0.1.
    Returns (crt, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    d = Path(directory)
    ca_cert = x509.load_pem_x509_certificate(Path(ca_crt).read_bytes())
    ca_priv = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    dns, ips = split_names(names)
    key = ec.generate_private_key(ec.SECP384R1())
    now = _now()
    san = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    primary = next((n for n in names if n.strip()), "localhost").strip("[]")
    cert = (x509.CertificateBuilder().subject_name(_name(primary)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_agreement=True,
                                         key_cert_sign=False, crl_sign=False, content_commitment=False,
                                         data_encipherment=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_priv.public_key()), critical=False)
            .sign(ca_priv, hashes.SHA256()))
    crt = _write_public(d / "server.crt", cert.public_bytes(serialization.Encoding.PEM))
    k = _write_private(d / "server.key", key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                                          serialization.NoEncryption()))
    return crt, k


def certificate_names(crt: str | Path) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) in a certificate's subject alternative names."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(crt).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [str(i) for i in san.get_values_for_type(x509.IPAddress)]


def create_node_key(private_path: str | Path, comment: str = "") -> tuple[Path, Path]:
    """A SuperNode's authentication key pair: EC P-384, the private key in OpenSSH format (for
    ``--auth-supernode-private-key``) and ``<private>.pub`` in OpenSSH public format (for
    ``flwr supernode register``), like ``ssh-keygen -t ecdsa -b 384 -N ''``. Returns (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    priv = Path(private_path)
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub_path = _write_public(priv.with_name(priv.name + ".pub"), pub + (f" {comment}".encode() if comment else b"") + b"\n")
    return priv, pub_path


# --------------------------------------------------------------------------- the plan: who runs what
def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string


def format_config(values: dict[str, Any]) -> str:
    """``key=value`` pairs as Flower's ``--node-config`` / ``--run-config`` expect them (TOML values)."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in values.items())


@dataclass
class Node:
    """One SuperNode: its partition, its key, where its Runtime API listens, its own data."""

    index: int
    private_key: str = ""              # path on the SuperNode's machine
    port: int = SUPERNODE_PORT
    node_config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"supernode-{self.index}"


@dataclass
class Plan:
    """The commands of one deployment. Paths are as seen on each machine (relative paths resolve
    against the folder the generated script lives in)."""

    address: str                       # how SuperNodes and the operator reach the SuperLink, host:port
    nodes: list[Node]
    listen_host: str = "0.0.0.0"
    port: int = SUPERLINK_PORT
    insecure: bool = False
    ca_cert: str = "ca.crt"            # SuperNodes' / operator's copy
    server_cert: str = "server.crt"
    server_key: str = "server.key"
    database: str = ""                 # "" = in memory
    connection: str = CONNECTION

    # --- SuperLink machine
    def superlink_command(self) -> list[str]:
        cmd = ["flower-superlink", "--host", self.listen_host, "--port", str(self.port),
               "--disable-runtime-dependency-installation"]
        if self.insecure:
            cmd += ["--insecure"]
        else:
            cmd += ["--ssl-ca-certfile", self.ca_cert, "--ssl-certfile", self.server_cert,
                    "--ssl-keyfile", self.server_key, "--enable-supernode-auth"]
        if self.database:
            cmd += ["--database", self.database]
        return cmd

    # --- each SuperNode machine
    def supernode_command(self, node: Node | int, ca_cert: str | None = None) -> list[str]:
        node = self.nodes[node] if isinstance(node, int) else node
        cmd = ["flower-supernode", "--superlink", self.address, "--host", "127.0.0.1", "--port", str(node.port)]
        if self.insecure:
            cmd += ["--insecure"]
        else:
            cmd += ["--root-certificates", ca_cert or self.ca_cert, "--auth-supernode-private-key", node.private_key]
        cmd += ["--node-config", format_config({"partition-id": node.index, **node.node_config})]
        return cmd

    # --- operator (any machine with the flwr CLI, the CA certificate and the public keys)
    def register_commands(self, public_keys: Sequence[str]) -> list[list[str]]:
        return [["flwr", "supernode", "register", k, self.connection] for k in public_keys]

    def run_command(self, app: str = ".", run_config: dict[str, Any] | None = None, stream: bool = False) -> list[str]:
        cfg = {"num_clients": len(self.nodes), "clients_per_round": len(self.nodes), **(run_config or {})}
        cmd = ["flwr", "run", app, self.connection, "--run-config", format_config(cfg), "--format", "json"]
        return cmd + (["--stream"] if stream else [])

    def connection_toml(self, ca_cert: str) -> str:
        """The ``[superlink.NAME]`` table for ``$FLWR_HOME/config.toml``."""
        lines = [f"[superlink.{self.connection}]", f"address = {_toml_value(self.address)}"]
        if self.insecure:
            lines.append("insecure = true")
        else:
            lines.append(f"root-certificates = {_toml_value(ca_cert)}")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- flwr CLI connection
def flwr_home(env: dict[str, str] | None = None) -> Path:
    """Flower's home folder: ``$FLWR_HOME``, else ``~/.flwr`` (as flwr.supercore.utils.get_flwr_home)."""
    home = (env if env is not None else os.environ).get("FLWR_HOME")
    return Path(home) if home else Path.home() / ".flwr"


def write_connection(plan: Plan, ca_cert: str | Path, env: dict[str, str] | None = None) -> Path:
    """Add (or replace) the plan's ``[superlink.NAME]`` table in ``$FLWR_HOME/config.toml``; other
    tables are left as they are. A missing file gets Flower's default content first."""
    path = flwr_home(env) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else DEFAULT_FLOWER_CONFIG
    ca = str(Path(ca_cert).expanduser().resolve()) if not plan.insecure else ""
    header = re.compile(r"^\s*\[")
    out, skip = [], False
    for line in text.splitlines():
        if header.match(line):
            skip = line.strip() == f"[superlink.{plan.connection}]"
        if not skip:
            out.append(line)
    new = "\n".join(out).rstrip("\n") + "\n\n" + plan.connection_toml(ca)
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    tomllib.loads(new)  # never leave a broken file behind
    path.write_text(new, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- scripts
_PRELUDE = """#!/usr/bin/env bash
# Generated by `fedfit deploy init`. {what}
# Run it in the Python environment where fedfit is installed (or set FEDFIT_VENV=/path/to/.venv).
set -euo pipefail
CALLER="$PWD"
cd "$(dirname "$0")"
if [ -n "${{FEDFIT_VENV:-}}" ]; then . "$FEDFIT_VENV/bin/activate"; fi
"""


def _script(path: Path, what: str, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_PRELUDE.format(what=what) + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _dq(text: str) -> str:
    """``text`` escaped for a double-quoted shell string."""
    return re.sub(r'(["$`\\])', r"\\\1", text)


def _copy(src: Path, dst: Path, private: bool = False) -> None:
    (_write_private if private else _write_public)(dst, src.read_bytes())


@dataclass
class Bundle:
    """What ``init`` wrote: one folder per machine."""

    root: Path
    plan: Plan
    superlink: Path
    supernodes: list[Path]
    operator: Path
    ca_key: Path | None


def default_app_dir() -> Path:
    """The fedfit checkout holding the Flower app (pyproject.toml with [tool.flwr.app]), else the cwd."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def init_deployment(out: str | Path, superlink_host: str, nodes: int, *, names: Sequence[str] = (),
                    port: int = SUPERLINK_PORT, listen_host: str = "0.0.0.0", node_ports: Sequence[int] | None = None,
                    same_host: bool = False, insecure: bool = False, connection: str = CONNECTION,
                    node_config: dict[str, Any] | None = None, run_config: dict[str, Any] | None = None,
                    app_dir: str | None = None, database: str = "") -> Bundle:
    """Make the CA, the SuperLink certificate and one key per SuperNode, and write one folder per machine::

        OUT/ca/                ca.crt, ca.key (the CA key: keep it here, copy it nowhere)
        OUT/superlink/         ca.crt, server.crt, server.key, start.sh              -> server machine
        OUT/supernode-I/       ca.crt, node.key, start.sh                            -> client machine I
        OUT/operator/          ca.crt, keys/supernode-I.pub, connect.sh, register.sh, run.sh, status.sh

    ``superlink_host`` is the name or IP address SuperNodes use to reach the SuperLink (it goes into the
    certificate with ``names``, localhost and 127.0.0.1). ``same_host`` gives the SuperNodes distinct
    Runtime API ports (9094, 9095, ...) so several can share one machine. ``node_config`` values may
    contain ``{i}`` (the SuperNode's index). Returns the Bundle."""
    if nodes < 1:
        raise DeployError(f"nodes must be >= 1 (got {nodes})")
    if not 0 < port < 65536:
        raise DeployError(f"port must be 1..65535 (got {port})")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", connection):
        raise DeployError(f"connection name must be letters, digits, '-' or '_' (got {connection!r})")
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise DeployError(f"{root} exists and is not empty: choose a new folder (an existing CA is never overwritten)")
    if app_dir is None:
        app_dir = str(default_app_dir())
    if node_ports is None:
        node_ports = [SUPERNODE_PORT + (i if same_host else 0) for i in range(nodes)]
    if len(node_ports) != nodes:
        raise DeployError(f"{len(node_ports)} SuperNode ports given for {nodes} SuperNodes")
    if same_host and len(set(node_ports)) != nodes:
        raise DeployError("SuperNodes on one host need distinct ports")
    split_names([superlink_host, *names])  # validates
    ca_dir, sl_dir, op_dir = root / "ca", root / "superlink", root / "operator"
    ca_crt = ca_key = None
    if not insecure:
        ca_crt, ca_key = create_ca(ca_dir)
        create_server_cert(sl_dir, ca_crt, ca_key, [superlink_host, *names])
        _copy(ca_crt, sl_dir / "ca.crt")
        _copy(ca_crt, op_dir / "ca.crt")
    node_list = []
    for i in range(nodes):
        cfg = {k: (v.format(i=i) if isinstance(v, str) else v) for k, v in (node_config or {}).items()}
        node_list.append(Node(i, private_key="node.key", port=int(node_ports[i]), node_config=cfg))
    plan = Plan(address=_hostport(superlink_host, port), nodes=node_list, listen_host=listen_host, port=port,
                insecure=insecure, connection=connection, database=database)

    sl_start = _script(sl_dir / "start.sh", "The SuperLink: run it on the server machine.",
                       "exec " + shlex.join(plan.superlink_command()) + "\n")
    node_dirs = []
    pubs = []
    for node in node_list:
        d = root / node.name
        if not insecure:
            _copy(ca_crt, d / "ca.crt")
            _, pub = create_node_key(d / "node.key", comment=f"fedfit-{node.name}")
            _copy(pub, op_dir / "keys" / f"{node.name}.pub")
            pub.unlink()  # the SuperNode's machine only needs its private key
            pubs.append(f"keys/{node.name}.pub")
        _script(d / "start.sh", f"SuperNode {node.index} (partition-id {node.index}): run it on its client machine.",
                "exec " + shlex.join(plan.supernode_command(node)) + "\n")
        node_dirs.append(d)

    connect_body = ("# Adds the SuperLink connection to the flwr CLI's config ($FLWR_HOME/config.toml, default ~/.flwr).\n"
                    "export FLWR_HOME=\"${FLWR_HOME:-$HOME/.flwr}\"\nmkdir -p \"$FLWR_HOME\"\n"
                    + shlex.join(["fedfit", "deploy", "connect", "--address", plan.address, "--name", connection]
                                 + (["--insecure"] if insecure else ["--ca", "ca.crt"])) + "\n")
    _script(op_dir / "connect.sh", "Operator: register the SuperLink connection with the flwr CLI.", connect_body)
    if insecure:
        reg = "echo 'insecure deployment: SuperNode authentication is off, nothing to register'\n"
    else:
        reg = "".join(shlex.join(c) + "\n" for c in plan.register_commands(pubs))
    _script(op_dir / "register.sh", "Operator: register every SuperNode's public key (SuperLink running).", reg)
    run_cmd = plan.run_command(".", run_config)
    run_body = (f"# usage: run.sh [APP_DIR] -- APP_DIR is the fedfit checkout (default: {app_dir}).\n"
                "# Extra fedfit options: edit --run-config (keys of fedfit/defaults.toml; set out_dir to an\n"
                "# absolute path on the SuperLink machine, where the ServerApp writes the run directory).\n"
                + "".join(f"export {k}={v}\n" for k, v in RUNTIME_ENV.items())
                + f"APP=\"${{1:-{_dq(app_dir)}}}\"\n"
                + 'case "$APP" in /*) ;; *) APP="$CALLER/$APP" ;; esac\n'
                + shlex.join(run_cmd[:2]) + ' "$APP" ' + shlex.join(run_cmd[3:]) + "\n")
    _script(op_dir / "run.sh", "Operator: start a fedfit run on the federation.", run_body)
    _script(op_dir / "status.sh", "Operator: list runs (status, Flower's traffic figure); usage: status.sh [RUN_ID].",
            'if [ $# -gt 0 ]; then ' + shlex.join(["flwr", "ls", connection, "--format", "json", "--run-id"])
            + ' "$1"; else ' + shlex.join(["flwr", "ls", connection]) + "; fi\n")
    return Bundle(root, plan, sl_start.parent, node_dirs, op_dir, ca_key)


# --------------------------------------------------------------------------- Flower's own traffic figure
def _json_out(text: str) -> Any:
    """The JSON object in a flwr CLI output (it may print status lines before it)."""
    start = text.find("{")
    if start < 0:
        raise DeployError(f"no JSON in flwr output: {text.strip()[:300]}")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def flwr_json(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Run a ``flwr ... --format json`` command, return its JSON (DeployError when it fails)."""
    full_env = {**os.environ, **RUNTIME_ENV, **(env or {})}
    p = subprocess.run(list(args), capture_output=True, text=True, env=full_env, timeout=timeout)
    try:
        out = _json_out(p.stdout)
    except DeployError:
        raise DeployError(f"{shlex.join(args)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-500:]}") from None
    if not out.get("success", p.returncode == 0):
        raise DeployError(f"{shlex.join(args)}: {out.get('error-message', out)}")
    return out


def run_info(run_id: int | str, connection: str = CONNECTION, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``flwr ls CONN --run-id ID --format json``: the run's entry (status, network-traffic, compute-time)."""
    out = flwr_json(["flwr", "ls", connection, "--run-id", str(run_id), "--format", "json"], env=env)
    runs = out.get("runs") or []
    if not runs:
        raise DeployError(f"run {run_id} not found on {connection}")
    return runs[0]


def wait_for_run(run_id: int | str, connection: str = CONNECTION, env: dict[str, str] | None = None,
                 timeout: float = 3600.0, poll: float = 2.0) -> dict[str, Any]:
    """Poll ``flwr ls`` until the run's status is ``finished:*``; returns its entry."""
    deadline = time.monotonic() + timeout
    while True:
        info = run_info(run_id, connection, env)
        if str(info.get("status", "")).startswith("finished"):
            return info
        if time.monotonic() > deadline:
            raise DeployError(f"run {run_id} still {info.get('status')} after {timeout:.0f} s")
        time.sleep(poll)


def record_flower_traffic(run_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write Flower's own figure for the run into ``run_dir/flower_traffic.json`` beside fedfit's metering,
    with fedfit's totals for comparison (Flower counts the Fleet messages the SuperLink exchanged with
    SuperNodes for this run, training and evaluation together, plus protocol requests)."""
    run_dir = Path(run_dir)
    traffic = info.get("network-traffic", {})
    rec: dict[str, Any] = {"source": "flwr ls --format json", "run-id": info.get("run-id"),
                           "status": info.get("status"), "flower_inbound_bytes": traffic.get("inbound-bytes"),
                           "flower_outbound_bytes": traffic.get("outbound-bytes"),
                           "flower_total_bytes": traffic.get("total-bytes"), "compute-time": info.get("compute-time"),
                           "elapsed": info.get("elapsed")}
    rounds_file = run_dir / "rounds.jsonl"
    if rounds_file.exists():
        rows = [json.loads(x) for x in rounds_file.read_text().splitlines() if x.strip()]
        up = sum(r.get("bytes_up_wire", 0) + r.get("eval_bytes_up_wire", 0) for r in rows)
        down = sum(r.get("bytes_down_wire", 0) + r.get("eval_bytes_down_wire", 0) for r in rows)
        rec.update(fedfit_up_wire_bytes=up, fedfit_down_wire_bytes=down, fedfit_total_wire_bytes=up + down)
        if rec["flower_total_bytes"]:
            rec["flower_over_fedfit"] = rec["flower_total_bytes"] / max(up + down, 1)
    path = run_dir / "flower_traffic.json"
    path.write_text(json.dumps(rec, indent=2) + "\n")
    return path
