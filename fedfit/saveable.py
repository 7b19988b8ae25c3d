"""The one protocol by which a stateful part of a run saves and loads its own state (as pfl-research's
``Saveable``): ``state()`` returns what a resumed run needs (a dict of plain values, arrays or picklable
objects), ``load_state(state)`` puts it back into a freshly made part. The server's checkpoint
(``strategies.checkpoint``) gathers the states of the run's parts by name: the global state, the strategy,
the DP ledger, the simulated clock, the byte accounting, the exchanges, the method, the tracker and the
personal-state report."""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Saveable(Protocol):
    def state(self) -> dict[str, Any]:
        """What a resumed run needs of this part."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (what ``state()`` returned)."""
