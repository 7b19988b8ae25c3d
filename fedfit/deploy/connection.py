"""The ``flwr`` CLI's connection to the SuperLink.

Flower 1.41 keeps CLI connections in ``$FLWR_HOME/config.toml`` (default ``~/.flwr``) as
``[superlink.NAME]`` tables, never in pyproject.toml (a ``[tool.flwr.federations]`` section there
makes ``flwr`` rewrite pyproject.toml).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from fedfit.deploy.plan import Plan

DEFAULT_FLOWER_CONFIG = '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'


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
