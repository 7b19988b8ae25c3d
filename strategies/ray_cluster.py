"""What fedfit needs of a Ray cluster, known without starting Ray: how many clients fit at once as Ray
places them (``concurrent_clients``, in Ray's fixed-point units), and that a cluster's head answers
(``check_ray_address``). Both fail or count before any Ray process starts (``strategies.simulate``)."""
from __future__ import annotations

import socket

from fedfit.preflight import ResourceError

RESOURCE_UNIT = 10_000  # Ray accounts resources in fixed point, 1/10,000 of a unit


def _units(x: float) -> int:
    return int(round(float(x) * RESOURCE_UNIT))


def concurrent_clients(nodes: list[dict[str, float]], num_cpus: float, num_gpus: float = 0.0) -> int:
    """Clients (actors of ``num_cpus`` CPUs and ``num_gpus`` GPUs) that fit at once on these Ray nodes'
    resources ({"CPU": .., "GPU": ..} each), node by node and in Ray's fixed-point units: 5 actors of
    0.2 GPU and 10 of 0.1 on one GPU (float division would give 4 and 9: 1 // 0.2 == 4.0)."""
    total = 0
    for res in nodes:
        n = _units(res.get("CPU", 0)) // max(_units(num_cpus), 1)
        if num_gpus > 0:
            n = min(n, _units(res.get("GPU", 0)) // max(_units(num_gpus), 1))
        total += n
    return total


def check_ray_address(address: str, timeout_s: float = 3.0) -> None:
    """Raise ResourceError when ``address`` (``host:port`` or ``ray://host:port``; ``auto`` and ``""``
    are not checked) takes no TCP connection within ``timeout_s`` seconds: a wrong address or a head
    that is not running fails in seconds, not after Ray's own retries (about a minute)."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ResourceError(f"ray_address = {address!r}: expected host:port (the head's GCS port, 6379 by default), "
                            f"ray://host:port or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise ResourceError(f"ray_address = {address}: no Ray head answers there ({why}). Start one with "
                            f"`ray start --head --port={port}` on that machine, or fix ray_address "
                            f"(\"\" starts a local Ray)") from None
