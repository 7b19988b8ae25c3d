"""Names, ports and the error type shared by the deployment modules."""
from __future__ import annotations

CONNECTION = "fedfit"                  # default name of the flwr CLI connection
SUPERLINK_PORT = 9092                  # one HTTPS port for Fleet, Control and Runtime APIs
SUPERNODE_PORT = 9094                  # each SuperNode's local Runtime API (Flower's default)
RUNTIME_ENV = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}  # never `uv sync` a fresh env


class DeployError(ValueError):
    """A bad deployment argument (one line, shown by ``fedfit deploy``)."""
