"""The server's checkpoint: everything needed to continue a run exactly after its last complete round.

``RUN/checkpoint.pkl`` is rewritten atomically (``fedfit.atomic``) after every round's results line: the
round, the state layout's fingerprint and, by name, the state of each stateful part of the run, each
saved by the part itself (``fedfit.saveable.Saveable``): the global float32 state, the strategy object
(FedAdam / FedYogi moments, FedAvgM momentum, the DP wrapper with its accountant's state and pending
events), the DP ledger, the simulated clock, the cumulative bytes, which phases have ever succeeded,
the method's own state, the tracker's run id and the personal-state report. Clients' own state lives
in their versioned state file (``fedfit.client_state``), every random stream is a function of (seed,
round, partition), and Flower's node ids are rediscovered: so a resumed run repeats exactly what the
uninterrupted run would have done. The file is a pickle: load only checkpoints of your own runs.

Checkpoints of format 1 (one flat dict, fedfit before the parts saved themselves) are read as the
parts they hold.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fedfit import atomic
from fedfit.results import RunFormatError
from fedfit.saveable import Saveable

FILE = "checkpoint.pkl"
FORMAT = 2


@dataclass
class Checkpoint:
    """A checkpoint read back: the last complete ``round``, the layout ``fingerprint``, each part's state."""

    round: int
    fingerprint: int | None
    parts: dict[str, dict[str, Any]]

    def restore(self, parts: Mapping[str, Saveable]) -> None:
        """Load each of ``parts`` that the checkpoint holds a state of (the others start afresh)."""
        for name, part in parts.items():
            if name in self.parts:
                part.load_state(self.parts[name])


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


def save(run_dir: str | Path, server_round: int, fingerprint: int, parts: Mapping[str, Saveable]) -> Path:
    """Write the checkpoint after ``server_round`` (atomically): every part's ``state()``, by name."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(
        {"format": FORMAT, "round": int(server_round), "fingerprint": fingerprint,
         "parts": {name: part.state() for name, part in parts.items()}})
    path = Path(run_dir) / FILE
    atomic.write_bytes(path, buf.getvalue())
    return path


def load(run_dir: str | Path) -> Checkpoint | None:
    """The checkpoint of ``run_dir``, or None when there is none (the run never finished a round)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        ck = pickle.loads(path.read_bytes())
    except Exception as e:
        raise RunFormatError(f"{path} is unreadable ({type(e).__name__}: {e}); start the run again with "
                             f"--overwrite") from None
    if isinstance(ck, dict) and ck.get("format") == 1:
        try:
            ck = _from_format_1(ck)
        except (KeyError, TypeError, ValueError) as e:
            raise RunFormatError(f"{path} is a fedfit checkpoint of format 1 without {e}; start the run again "
                                 f"with --overwrite") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or not isinstance(ck.get("parts"), dict):
        raise RunFormatError(f"{path} is not a fedfit checkpoint of format {FORMAT} (or 1); start the run again "
                             f"with --overwrite")
    return Checkpoint(int(ck["round"]), ck.get("fingerprint"), ck["parts"])


def _from_format_1(ck: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint (one flat dict) as the parts' states it holds."""
    parts = {"global": {"state": ck["state"]}, "strategy": {"strategy": ck["strategy"]},
             "exchanges": {"ever": ck["ever"]}, "traffic": dict(zip(("cum_down", "cum_up"), ck["cum"])),
             "tracker": {"id": ck.get("tracker")}}
    if ck.get("dp_ledger") is not None:
        parts["ledger"] = dict(zip(("releases", "seen"), ck["dp_ledger"]))
    if ck.get("clock") is not None:
        parts["clock"] = {"now": ck["clock"]}
    return {"format": FORMAT, "round": ck["round"], "fingerprint": ck.get("fingerprint"), "parts": parts}
