"""The server's checkpoint: everything needed to continue a run exactly after its last complete round.

``RUN/checkpoint.pkl`` is rewritten atomically (``fedfit.atomic``) after every round's results line:
the round, the global float32 state, the strategy object itself (FedAdam / FedYogi moments, FedAvgM
momentum, the DP wrapper with its accountant's state and pending events), the cumulative meters and
which phases have ever succeeded. Clients' own state lives in their versioned state file
(``fedfit.client_state``), every random stream is a function of (seed, round, partition), and
Flower's node ids are rediscovered: so a resumed run repeats exactly what the uninterrupted run would
have done. The file is a pickle: load only checkpoints of your own runs.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from fedfit import atomic
from fedfit.results import RunFormatError

FILE = "checkpoint.pkl"
FORMAT = 1


def _accountant(config, state):
    from flwr.serverapp import RdpAccountant

    acc = RdpAccountant(config)
    acc.load_state_dict(state)
    return acc


class _Pickler(pickle.Pickler):
    """Pickles strategies; Flower's RDP accountant (which holds modules) goes by its ``state_dict``."""

    def reducer_override(self, obj):
        try:
            from flwr.serverapp import RdpAccountant
        except ImportError:  # pragma: no cover
            return NotImplemented
        if isinstance(obj, RdpAccountant):
            return _accountant, (obj.config, obj.state_dict())
        return NotImplemented


def save(run_dir: str | Path, server_round: int, state: np.ndarray, strategy: Any, **extra: Any) -> Path:
    """Write the checkpoint after ``server_round`` (atomically)."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(
        {"format": FORMAT, "round": int(server_round), "state": np.asarray(state, np.float32), "strategy": strategy,
         **extra})
    path = Path(run_dir) / FILE
    atomic.write_bytes(path, buf.getvalue())
    return path


def load(run_dir: str | Path) -> dict[str, Any] | None:
    """The checkpoint of ``run_dir``, or None when there is none (the run never finished a round)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        ck = pickle.loads(path.read_bytes())
    except Exception as e:
        raise RunFormatError(f"{path} is unreadable ({type(e).__name__}: {e}); start the run again with "
                             f"--overwrite") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise RunFormatError(f"{path} is not a fedfit checkpoint of format {FORMAT}; start the run again with "
                             f"--overwrite")
    return ck
