"""The deployment plan: who runs what, as the exact Flower 1.41 command lines.

``flower-superlink`` serves the Fleet, Control and Runtime APIs on one HTTPS port (``--host`` /
``--port``, default 127.0.0.1:8000); node authentication (``--enable-supernode-auth``) is refused
without TLS. ``flower-supernode --superlink HOST:PORT --root-certificates CA
--auth-supernode-private-key KEY --node-config '...'``; its own Runtime API listens on ``--host`` /
``--port`` (default 9094), so SuperNodes sharing one host need distinct ``--port`` values
(``--clientappio-api-address`` is gone in 1.41). SuperNodes run as ``fedfit supernode`` with the same
options: Flower's ``flower-supernode`` with a message whose run stopped while it was received dropped, not
left to be answered in place of the next one (``clients.supernode``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from fedfit.deploy.common import CONNECTION, SUPERLINK_PORT, SUPERNODE_PORT


def hostport(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
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
        cmd = ["fedfit", "supernode", "--superlink", self.address, "--host", "127.0.0.1", "--port", str(node.port)]
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
