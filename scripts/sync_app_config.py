"""Rewrite pyproject.toml's [tool.flwr.app.config] from fedfit/defaults.toml (Flower only accepts
run-config overrides for keys listed there; tests/test_config.py keeps the two equal)."""
import json
from pathlib import Path

from fedfit.config import defaults


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v) if isinstance(v, str) else repr(v)


if __name__ == "__main__":
    p = Path(__file__).resolve().parents[1] / "pyproject.toml"
    head, _ = p.read_text().split("[tool.flwr.app.config]\n", 1)
    p.write_text(head + "[tool.flwr.app.config]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in defaults().items()))
    print(f"updated {p}")
