"""Flower's own traffic figure for a run, read with the ``flwr`` CLI (as a subprocess).

Flower 1.41: ``flwr ls CONN --run-id ID --format json`` reports the run's Fleet traffic
(``network-traffic``: inbound / outbound bytes as the SuperLink counted them, whole run, no
per-round split). Timeouts and poll intervals are in seconds.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from fedfit.deploy.common import CONNECTION, RUNTIME_ENV, DeployError


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


def record_flower_traffic(run_dir: str | Path, info: dict[str, Any] | Sequence[dict[str, Any]]) -> Path:
    """Write Flower's own figure for the run into ``run_dir/flower_traffic.json`` beside fedfit's metering,
    with fedfit's totals for comparison. Flower counts the Fleet messages the SuperLink exchanged with
    SuperNodes for its run, training and evaluation together, plus protocol requests. fedfit's total is
    what the ServerApp sent and received: every round's training, evaluation, hello and resume bytes, and
    the last hello that collects the SuperNodes' ledgers. A finished run adds what the SuperNodes counted
    they received and sent (``node_counted_bytes_wire``, ``clients.ledger``: it leaves out messages no
    SuperNode pulled and takes in replies that came too late to be pulled). ``info``: ``run_info``'s entry,
    or the entries of every Flower run a resumed run took (their figures are summed)."""
    run_dir = Path(run_dir)
    infos = [info] if isinstance(info, dict) else list(info)

    def flower(key: str) -> int | None:
        values = [i.get("network-traffic", {}).get(key) for i in infos]
        return None if any(v is None for v in values) else sum(int(v) for v in values)

    rec: dict[str, Any] = {"source": "flwr ls --format json", "run-id": infos[-1].get("run-id"),
                           "runs": [i.get("run-id") for i in infos], "status": infos[-1].get("status"),
                           "flower_inbound_bytes": flower("inbound-bytes"),
                           "flower_outbound_bytes": flower("outbound-bytes"),
                           "flower_total_bytes": flower("total-bytes"),
                           "compute-time": infos[-1].get("compute-time"), "elapsed": infos[-1].get("elapsed")}
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if (run_dir / "rounds.jsonl").exists():
        from fedfit.results import read_rounds  # here, not at import: operator tooling loads no core module

        rows = read_rounds(run_dir)
        up = sum(r.get("bytes_up_wire", 0) + r.get("eval_bytes_up_wire", 0) for r in rows)
        down = sum(r.get("bytes_down_wire", 0) + r.get("eval_bytes_down_wire", 0) for r in rows)
        other = (sum(r.get("setup_bytes_wire", 0) + r.get("resume_bytes_wire", 0) for r in rows)
                 + int(summary.get("final_bytes_wire") or 0))
        total = up + down + other
        rec.update(fedfit_up_wire_bytes=up, fedfit_down_wire_bytes=down, fedfit_setup_resume_wire_bytes=other,
                   fedfit_total_wire_bytes=total)
        if rec["flower_total_bytes"]:
            rec["flower_over_fedfit"] = rec["flower_total_bytes"] / max(total, 1)
    counted = summary.get("node_counted_bytes_wire")
    if counted:  # what the SuperNodes counted themselves (clients.ledger): what crossed the network
        rec["fedfit_node_counted_wire_bytes"] = int(counted)
        if rec["flower_total_bytes"]:
            rec["flower_over_node_counted"] = rec["flower_total_bytes"] / int(counted)
        by_run = summary.get("node_counted_by_run") or {}
        rec["per_run"] = [{"run-id": i.get("run-id"),
                           "flower_total_bytes": i.get("network-traffic", {}).get("total-bytes"),
                           "node_counted_wire_bytes": by_run.get(str(i.get("run-id")))} for i in infos]
        for r in rec["per_run"]:
            if r["flower_total_bytes"] and r["node_counted_wire_bytes"]:
                r["flower_over_node_counted"] = int(r["flower_total_bytes"]) / int(r["node_counted_wire_bytes"])
    path = run_dir / "flower_traffic.json"
    path.write_text(json.dumps(rec, indent=2) + "\n")
    return path
