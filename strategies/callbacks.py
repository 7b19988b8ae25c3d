"""Per-run side work around the round loop, one class each (as pfl-research's ``pfl/callback/``).

The loop (``strategies.loop.Federation``) writes the results and the checkpoint itself; then it calls
every callback, in list order: ``wrap_grid`` once before any message (a callback may put a layer
around the engine's grid: ``fedfit bench`` times the exchanges so), ``on_run_start`` after the
checkpoint was read (``resumed_after``: the last complete round, or None), ``on_round_end`` with each
round's ``RoundRecord`` after its results line and checkpoint, and ``on_run_end`` with the summary after
the run's final files; ``on_run_abort`` instead when the run stops on an error (a tracker then closes its
run as failed). Each hook gets a ``RunView``: the run as a callback may read it, never the loop itself.

A callback that keeps state a resumed run needs is a ``fedfit.saveable.Saveable`` with a
``checkpoint_key``: the loop checkpoints it under that name and loads it before ``on_run_start``.

The built-in ones, in the order the loop puts them: ``PrintProgress`` (one line per round with an ETA;
live rows of rounds and clients on a terminal), ``ReportPersonalState`` (what the adapter keeps per
client and never sends), ``Track`` (the experiment tracker, ``fedfit.trackers``, when ``tracker`` is
set); callers' own (the bench's timer) come last.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from fedfit import paired
from fedfit import progress as live
from fedfit.format import human_bytes, pct
from fedfit.results import RoundRecord


@dataclass(frozen=True)
class RunView:
    """What a callback sees of the run (read-only): its options ``cfg``, its directory, ``config`` (the
    record config.json holds) and ``records``, every round's so far (a resumed run's earlier ones too)."""

    cfg: Mapping[str, Any]
    run_dir: Path
    config: Mapping[str, Any]
    records: tuple[RoundRecord, ...] = ()


class Callback:
    """Does nothing; subclasses override the hooks they need."""

    def wrap_grid(self, grid):
        return grid

    def on_run_start(self, run: RunView, resumed_after: int | None) -> None:
        pass

    def on_round_end(self, run: RunView, record: RoundRecord) -> None:
        pass

    def on_run_end(self, run: RunView, summary: dict[str, Any]) -> None:
        pass

    def on_run_abort(self, run: RunView, error: BaseException) -> None:
        """The run stopped on ``error`` after ``on_run_start`` (what ran so far stays on disk)."""


class PrintProgress(Callback):
    """One line per round, with the run's ETA (from the pace of the training rounds this process ran),
    and the run's last line, through ``progress``. On a terminal also live rows (``fedfit.progress``):
    the run's rounds, and the clients of the exchange in flight (``_ClientsBar``)."""

    def __init__(self, progress: Callable[[str], None], rounds: int):
        self.progress, self.rounds = progress, rounds
        self.bar = live.Bar()
        self._seconds, self._trained = 0.0, 0

    def wrap_grid(self, grid):
        return _ClientsBar(grid)

    def on_run_start(self, run, resumed_after):
        from fedfit.config import run_name

        first = 0 if resumed_after is None else resumed_after + 1
        self.bar = live.bar(f"{run_name(run.cfg)}: rounds", total=self.rounds + 1, completed=first)

    def on_round_end(self, run, record):
        if record.round > 0:  # round 0 only evaluates: not the pace of the rounds left
            self._seconds, self._trained = self._seconds + record.seconds, self._trained + 1
        self.progress(round_line(record, self.rounds)
                      + live.eta(self._seconds, self._trained, self.rounds - record.round))
        self.bar.advance()

    def on_run_end(self, run, summary):
        self.bar.close()
        records = run.records
        last = records[-1]
        counted = summary["first_failure"]
        fails = f"; {summary['failures']} client messages failed (first: {counted['reason']})" if counted else ""
        new = f", new users {_pct(last.new_acc_mean)}" if last.new_users else ""
        first = records[0]
        mine = paired.client_change(first.per_client, last.per_client, run.cfg["num_clients"]) \
            if len(records) > 1 else None
        theirs = paired.image_change(first.global_answers, last.global_answers) if len(records) > 1 else None
        mine_s = f", paired {mine} points over {mine.n} clients, t = {mine.t:.1f}" \
            if mine is not None and mine.n > 1 else ""
        theirs_s = f" (round 0: {_pct(first.global_acc)}, paired {theirs} points over {theirs.n:,} images)" \
            if theirs is not None and theirs.n > 1 else ""
        self.progress(f"fedfit: done in {summary['total_seconds']:.0f} s: personalized accuracy "
                      f"{_pct(last.acc_mean)} (round 0: {_pct(first.acc_mean)}{mine_s}){new}, global "
                      f"{_pct(last.global_acc)}{theirs_s}, {human_bytes(last.cum_bytes_wire)} sent for "
                      f"training{fails}; results in {run.run_dir}")

    def on_run_abort(self, run, error):
        self.bar.close()


class _ClientsBar:
    """A Grid wrapper: on a terminal, each exchange is a live row of its clients, advanced as each one
    answers where the engine reports replies (``on_reply``: the ray and inline engines), else at its end."""

    def __init__(self, grid):
        self._grid = grid
        engine = grid
        while "_grid" in vars(engine):  # the engine under any other wrappers
            engine = vars(engine)["_grid"]
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        from strategies.metering import MeteredGrid

        messages = list(messages)
        if not messages or not live.is_live():
            return self._grid.send_and_receive(messages, timeout=timeout)
        hook = hasattr(type(self._engine), "on_reply")
        with live.bar(f"  {MeteredGrid.exchange_kind(messages)}: clients", total=len(messages)) as row:
            if hook:
                self._engine.on_reply = row.advance
            try:
                return list(self._grid.send_and_receive(messages, timeout=timeout))
            finally:
                if hook:
                    self._engine.on_reply = None


class ReportPersonalState(Callback):
    """After the run's first round: what the adapter keeps per client and never sends, read from the
    clients' state file (in simulation it lies in the run directory); ``numbers`` for the summary. Its
    state (checkpointed): whether it reported, and ``numbers``."""

    checkpoint_key = "personal_report"

    def __init__(self, progress: Callable[[str], None]):
        self.progress = progress
        self.numbers: int | None = None
        self._done = False

    def state(self) -> dict[str, Any]:
        return {"done": self._done, "numbers": self.numbers}

    def load_state(self, state: dict[str, Any]) -> None:
        self._done, self.numbers = bool(state["done"]), state["numbers"]

    def on_round_end(self, run, record):
        if self._done:
            return
        self._done = True
        from fedfit.client_state import ClientStateError, open_store
        from fedfit.federated import PERSONAL, adapter_name, shared_model
        from fedfit.registry import METHODS

        cfg = run.cfg
        if not shared_model(cfg).adapter.has_personal_state and METHODS.get(cfg["method"]).shared:
            self.numbers = 0
            self.progress(f"fedfit: personal state per client: none ({adapter_name(cfg)} keeps nothing "
                          f"between rounds)")
            return
        path = run.run_dir / "clients.sqlite"
        if not path.is_file():  # deployment: the clients' state lies on their own machines
            return
        try:
            store = open_store(path)
            sizes = [sum(a.size for a in store.get_all(p, PERSONAL, 1 << 60).values()) for p in store.partitions()]
        except ClientStateError as e:
            self.progress(f"fedfit: personal state per client: not counted ({e})")
            return
        sizes = [x for x in sizes if x]
        if sizes:
            self.numbers = int(np.median(sizes))
            self.progress(f"fedfit: personal state per client: {self.numbers:,} numbers "
                          f"({human_bytes(4 * self.numbers)} fp32, median over {len(sizes)} clients), kept on "
                          f"the client, never sent")


class Track(Callback):
    """The run's experiment tracker (``fedfit.trackers``): started (or, resuming, continued by the id the
    checkpoint kept) at the run's start, every round's numbers logged at its round, the figures of the
    run logged when it ends. Its state (checkpointed): the tracker's run id."""

    checkpoint_key = "tracker"

    def __init__(self, name: str):
        from fedfit.trackers import create_tracker

        self.tracker = create_tracker(name)
        self.id: str | None = None

    def state(self) -> dict[str, Any]:
        return {"id": self.id}

    def load_state(self, state: dict[str, Any]) -> None:
        self.id = state["id"]

    def on_run_start(self, run, resumed_after):
        from fedfit.config import run_name

        cfg = run.cfg
        self.id = self.tracker.start(run.run_dir, run_name(cfg), dict(run.config), cfg["tracker_group"],
                                     self.id if resumed_after is not None else None,
                                     0 if resumed_after is None else resumed_after + 1)

    def on_round_end(self, run, record):
        from fedfit.trackers import round_metrics

        self.tracker.log(record.round, round_metrics(asdict(record)))

    def on_run_end(self, run, summary):
        from fedfit.plot import plot_runs

        try:
            for path in plot_runs([run.run_dir], run.run_dir / "plots"):
                self.tracker.artifact(path)
        finally:
            self.tracker.finish()

    def on_run_abort(self, run, error):
        self.tracker.finish(failed=True)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else pct(x) + "%"


def round_line(r: RoundRecord, rounds: int) -> str:
    """The progress line of round ``r``."""
    central = r.extra.get("central")
    if central:
        trained = (f"server trained {central.get('train_steps', 0)} steps on {r.clients} clients' pooled images"
                   + (f" ({human_bytes(r.bytes_up_wire)} uploaded)" if r.bytes_up_wire else ""))
    else:
        senders = r.clients + r.stragglers  # stragglers' replies were sent too (and metered), just not kept
        per = f"{human_bytes(r.bytes_up_wire / senders)}/client up" if r.clients and r.bytes_up_wire else \
            ("nothing sent up" if r.clients else "no training")
        trained = f"{r.clients} trained, {per}"
    loss = f" | loss {r.train_loss:.3f}" if r.train_loss is not None else ""
    fail = f" | {r.failed} failed" if r.failed else ""
    eps = f" | eps {r.dp_epsilon:.2f}" if r.dp_epsilon is not None else ""
    if r.dp_epsilon_sampled is not None:
        eps += f" (sampled {r.dp_epsilon_sampled:.2f})"
    new = f" | new users {_pct(r.new_acc_mean)}" if r.new_users else ""
    new += "".join(f" | {k.replace('accuracy_', '')} head {_pct(v)}" for k, v in r.acc_extra.items())
    return (f"round {r.round:>3}/{rounds} | {trained}, total {human_bytes(r.cum_bytes_wire)} | "
            f"acc {_pct(r.acc_mean)} (median {_pct(r.acc_median)}, p10 {_pct(r.acc_p10)}, {r.eval_clients} clients)"
            f"{new} | global {_pct(r.global_acc)}{loss}{eps}{fail} | {r.seconds:.1f} s")
