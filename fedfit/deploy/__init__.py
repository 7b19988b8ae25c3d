"""Operator tooling for a real deployment: one SuperLink, N SuperNodes on other machines (Flower 1.41).

No Flower or PyTorch import: ``certificates`` makes the TLS certificates and SuperNode keys, ``plan``
the exact Flower commands, ``scripts`` one folder of start scripts per machine, ``connection`` the
``flwr`` CLI's SuperLink connection, ``traffic`` Flower's own per-run byte count (via the ``flwr`` CLI).
"""
from fedfit.deploy.certificates import certificate_names, create_ca, create_node_key, create_server_cert, split_names
from fedfit.deploy.common import CONNECTION, RUNTIME_ENV, SUPERLINK_PORT, SUPERNODE_PORT, DeployError
from fedfit.deploy.connection import flwr_home, write_connection
from fedfit.deploy.plan import Node, Plan, format_config
from fedfit.deploy.scripts import Bundle, default_app_dir, init_deployment
from fedfit.deploy.traffic import flwr_json, record_flower_traffic, run_info, wait_for_run

__all__ = [
    "CONNECTION", "RUNTIME_ENV", "SUPERLINK_PORT", "SUPERNODE_PORT", "Bundle", "DeployError", "Node", "Plan",
    "certificate_names", "create_ca", "create_node_key", "create_server_cert", "default_app_dir", "flwr_home",
    "flwr_json", "format_config", "init_deployment", "record_flower_traffic", "run_info", "split_names",
    "wait_for_run", "write_connection",
]
