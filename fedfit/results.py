"""Run directories: the resolved config, one JSON line per round, the final adapter state.

Layout of a run directory::

    RUN/config.json      the resolved configuration (every option, after defaults and overrides)
    RUN/rounds.jsonl     one ``RoundRecord`` per line, round 0 = the initial state (no training)
    RUN/final_state.npz  the final global adapter arrays (name -> float32 array)
    RUN/summary.json     the last record plus totals, written when the run ends
    RUN/checkpoint.pkl   the server's state after the last complete round (``strategies.checkpoint``)
    RUN/clients.sqlite   clients' own state across rounds, versioned (``fedfit.client_state``)

Byte fields are bytes; ``*_wire`` is the size of the serialized Flower messages, ``*_payload`` the
sum of ``nbytes`` of the arrays they carry. Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fedfit import atomic

from fedfit.format import human_bytes, markdown_table, pct


@dataclass
class RoundRecord:
    """What one federated round cost and reached. Clients are named by partition id (a string key
    in JSON); failures list every client message of the round that produced nothing usable."""

    round: int
    clients: int = 0                  # clients whose training reply was aggregated (or kept, local-only)
    bytes_down_wire: int = 0          # training traffic server -> clients, this round
    bytes_up_wire: int = 0            # training traffic clients -> server, this round
    bytes_down_payload: int = 0
    bytes_up_payload: int = 0
    cum_bytes_down_wire: int = 0      # cumulative training traffic since round 0
    cum_bytes_up_wire: int = 0
    cum_bytes_wire: int = 0           # down + up, cumulative: the communication cost of learning
    eval_bytes_down_wire: int = 0     # evaluation traffic (measurement, not learning), this round
    eval_bytes_up_wire: int = 0
    setup_bytes_wire: int = 0         # the "hello" exchange (which node holds which partition)
    resume_bytes_wire: int = 0        # what resuming cost before this round (the first a resumed run records):
                                      # the interrupted attempt's messages of rounds it never recorded (metered
                                      # as sent, none lost) and the resumed run's hello
    rejected: int = 0                 # replies dropped by validation (malformed or hostile)
    failed: int = 0                   # client messages without a usable reply (errors, timeouts, absent, rejected)
    acc_mean: float | None = None     # personalized accuracy across evaluated clients
    acc_median: float | None = None
    acc_p10: float | None = None      # 10th percentile across clients
    acc_std: float | None = None
    acc_finetuned_mean: float | None = None  # after local personalization steps, if configured
    query_norm_mean: float | None = None  # mean raw L2 norm of the evaluated training clients' query features
                                      # (before feature_norm): how FiLM moves the body's feature scale
    global_acc: float | None = None   # FiT's global accuracy: one head (the run's family) from every training
                                      # client's class statistics, over all their classes, on the evaluated
                                      # clients' queries (each image once)
    global_classes: int = 0           # classes in that head
    global_clients: int = 0           # training clients whose statistics built it
    global_queries: int = 0           # query images it scored
    global_answers: dict[str, Any] = field(default_factory=dict)  # which image ids it scored and which it got
                                      # right (fedfit.paired.encode_answers): the paired change between rounds
    global_dropped: list[dict[str, int]] = field(default_factory=list)  # robust strategies: {client, class}
                                      # contributions left out of the global statistics as outliers
    global_unscreened: int | None = None  # robust strategies: classes of the global head held by one client
                                      # (their means compared with no one's; fedfit.global_head)
    eval_clients: int = 0             # training clients evaluated
    new_acc_mean: float | None = None  # personalized accuracy of new users (held out: never trained)
    new_acc_median: float | None = None
    new_acc_p10: float | None = None
    new_users: int = 0                # new users evaluated
    acc_extra: dict[str, float] = field(default_factory=dict)      # the adapter's own heads (accuracy_linear...)
    new_acc_extra: dict[str, float] = field(default_factory=dict)  # the same for new users
    train_loss: float | None = None   # mean episodic loss of the clients' local steps
    update_norm: float | None = None  # L2 norm of this round's change of the global state (the aggregated step)
    dp_epsilon: float | None = None   # cumulative epsilon of the DP accountant (at the run's delta), no
                                      # amplification by sampling (Flower's): add/remove-one neighbours
    dp_epsilon_sampled: float | None = None  # with the server's sampling (k of n, without replacement): replace-one
                                      # neighbours; None for a seeded (public) sample
    seconds: float = 0.0              # wall-clock seconds of this round
    sim_seconds: float | None = None  # simulated seconds of this round's training exchange (fedfit.clock)
    sim_total_s: float | None = None  # simulated seconds since the run started, at this round's end
    online: int | None = None         # training clients online when the round started (the sampling pool)
    stragglers: int = 0               # replies after the K-th one or the deadline: not aggregated
    offline: int = 0                  # sampled clients that went offline before their reply (dropouts)
    trained: list[int] = field(default_factory=list)       # partition ids sampled for training (empty under DP's
                                      # secret sampling, which also keeps training numbers out of per_client,
                                      # training failures' clients and the round's sim_* times: strategies/dp.py)
    per_client: dict[str, dict[str, Any]] = field(default_factory=dict)  # partition id -> its numbers
    failures: list[dict[str, Any]] = field(default_factory=list)  # {client, phase, kind, reason}
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RoundRecord":
        known = {f.name for f in fields(cls)}
        extra = dict(d.get("extra") or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        return cls(**{k: v for k, v in d.items() if k in known and k != "extra"}, extra=extra)


class RunExistsError(RuntimeError):
    """A run directory already holds results and neither resume nor overwrite was asked for."""


class RunFormatError(ValueError):
    """A file of a run directory that cannot be read back (a malformed results line, a broken checkpoint);
    the message names the file and what to do."""


def holds_results(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds results of a run (round lines or a summary)."""
    d = Path(run_dir)
    rounds = d / "rounds.jsonl"
    return (d / "summary.json").is_file() or (rounds.is_file() and rounds.stat().st_size > 0)


def check_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to start a run over existing results (RunExistsError naming ``--resume`` / ``--overwrite``)."""
    if holds_results(run_dir) and not resume and not overwrite:
        raise RunExistsError(f"{run_dir} already holds results: continue it with --resume {run_dir}, or start it "
                             f"again with --overwrite (or choose another name=)")


def free_on_resume() -> set[str]:
    """Options a resumed run may change: where the run folder is (it may have moved), where and how its
    clients run (engine group, but ``precision``, which changes the numbers on a GPU) and where its
    output goes."""
    from fedfit import options

    groups = options.groups()
    return ({"name"} | {o.name for o in groups["engine"][1] if o.name != "precision"}
            | {o.name for o in groups["output"][1]})


def option_changed(run_dir: str | Path, cfg: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first option whose value in ``cfg`` differs from the one ``run_dir`` was made with (its
    config.json), as (key, saved, now); None when none does or nothing was written yet. Options it does not
    record, and ``free_on_resume``, are not compared; an unreadable config.json is a RunFormatError."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RunFormatError(f"{path}: unreadable ({e}); start the run again with --overwrite") from None
    from fedfit.config import defaults

    free = free_on_resume()
    for key in defaults():
        if key in free or key not in saved:
            continue
        now = json.loads(json.dumps(cfg.get(key), default=str))
        if now != saved[key]:
            return key, saved[key], now
    return None


def check_same_options(run_dir: str | Path, cfg: dict[str, Any]) -> None:
    """Resuming ``run_dir`` with ``cfg``: RunExistsError naming the first option that differs from the one the
    run was started with (``option_changed``)."""
    changed = option_changed(run_dir, cfg)
    if changed is not None:
        key, saved, now = changed
        raise RunExistsError(f"{run_dir} was started with {key} = {saved!r}, not {now!r}: a resumed run keeps "
                             f"its options (give the same ones, or start it again with --overwrite)")


class RunWriter:
    """Writes ``RUN/``: config.json once, one round line at a time (appended and fsynced), the final
    state and summary at the end (atomically). ``resume_after=R`` keeps the lines of rounds <= R (a
    line torn by a kill is dropped) and appends after them; ``overwrite`` clears the folder first."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any], resume_after: int | None = None,
                 overwrite: bool = False):
        self.dir = Path(run_dir)
        if overwrite and self.dir.is_dir():
            for f in self.dir.iterdir():
                if f.is_file() or f.is_symlink():
                    f.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._rounds = self.dir / "rounds.jsonl"
        self.records: list[RoundRecord] = []
        if resume_after is None:
            atomic.write_text(self.dir / "config.json", json.dumps(config, indent=2, sort_keys=True, default=str))
            atomic.write_text(self._rounds, "")
            for stale in ("summary.json", "final_state.npz", "checkpoint.pkl", "clients.sqlite", "clients.sqlite-wal",
                          "clients.sqlite-shm"):
                (self.dir / stale).unlink(missing_ok=True)
        else:
            self.records = [r for r in _read_lines(self._rounds, tolerate_torn_tail=True) if r.round <= resume_after]
            atomic.write_text(self._rounds, "".join(r.to_json() + "\n" for r in self.records))
            (self.dir / "summary.json").unlink(missing_ok=True)

    def write(self, record: RoundRecord) -> None:
        self.records.append(record)
        atomic.append_line(self._rounds, record.to_json())

    def save_state(self, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic.write_bytes(self.dir / "final_state.npz", buf.getvalue())

    def finish(self, **totals: Any) -> dict[str, Any]:
        last = asdict(self.records[-1]) if self.records else {}
        summary = {"last_round": last, **totals}
        atomic.write_text(self.dir / "summary.json", json.dumps(summary, indent=2, default=str))
        return summary


@dataclass
class Run:
    """A finished (or running) run read back from disk: its resolved options, one ``RoundRecord`` per
    round, and the summary once it has ended (None before)."""

    dir: Path
    config: dict[str, Any]
    rounds: list[RoundRecord]
    summary: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.config.get("name") or self.dir.name

    @property
    def last(self) -> RoundRecord:
        return self.rounds[-1]

    def final_state(self) -> dict[str, np.ndarray]:
        """The final global adapter, name -> float32 array (``final_state.npz``)."""
        with np.load(self.dir / "final_state.npz") as f:
            return {k: f[k] for k in f.files}


def check_resumable(run_dir: str | Path) -> None:
    """Raise RunFormatError when ``run_dir``'s results lines cannot be read back for ``--resume`` (a torn
    last line is fine: resuming drops it)."""
    for _ in _read_lines(Path(run_dir) / "rounds.jsonl", tolerate_torn_tail=True):
        pass


def read_run(run_dir: str | Path) -> Run:
    """Read a run directory; raises FileNotFoundError / ValueError with the offending path."""
    d = Path(run_dir)
    cfg_path, rounds_path = d / "config.json", d / "rounds.jsonl"
    if not rounds_path.exists():
        raise FileNotFoundError(f"{d}: not a fedfit run directory (no rounds.jsonl)")
    config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    summary_path = d / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return Run(d, config, list(_read_lines(rounds_path)), summary)


def read_rounds(run: str | Path, tolerate_torn_tail: bool = False) -> list[dict[str, Any]]:
    """THE reader of rounds.jsonl: one dict per round line of ``run`` (a run directory or the file itself),
    in order; [] when there is none. With ``tolerate_torn_tail`` an unterminated last line (a kill in
    the middle of an append) is dropped; any other malformed line is a RunFormatError naming it."""
    path = Path(run)
    path = path / "rounds.jsonl" if path.is_dir() or path.suffix != ".jsonl" else path
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RunFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); start the run again with "
                             f"--overwrite") from None
    lines = text.splitlines()
    if tolerate_torn_tail and lines and not text.endswith("\n"):
        lines = lines[:-1]
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        err: Exception | None = None
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, or nesting deeper than Python's stack
            row, err = None, e
        if not isinstance(row, dict) or "round" not in row:
            why = err if err is not None else "not a round record"
            raise RunFormatError(f"{path}:{i}: malformed round record ({why}); remove that line and what follows "
                                 f"it to resume from the round before, or start again with --overwrite")
        out.append(row)
    return out


def _read_lines(path: Path, tolerate_torn_tail: bool = False) -> Iterator[RoundRecord]:
    """``read_rounds`` as RoundRecords."""
    for row in read_rounds(path, tolerate_torn_tail):
        try:
            yield RoundRecord.from_dict(row)
        except TypeError as e:
            raise RunFormatError(f"{path}: round {row.get('round')}: malformed round record ({e})") from None


def rounds_markdown(run: Run) -> str:
    """A Markdown table of a run's rounds: accuracy (%), bytes (decimal units), loss, seconds."""
    header = ["round", "clients", "uplink (wire)", "downlink (wire)", "cumulative", "acc mean", "median", "p10",
              "new users", "global acc", "query norm", "loss", "s"]
    rows = [[str(r.round), str(r.clients), human_bytes(r.bytes_up_wire), human_bytes(r.bytes_down_wire),
             human_bytes(r.cum_bytes_wire), pct(r.acc_mean), pct(r.acc_median), pct(r.acc_p10), pct(r.new_acc_mean),
             pct(r.global_acc), "" if r.query_norm_mean is None else f"{r.query_norm_mean:.1f}",
             "" if r.train_loss is None else f"{r.train_loss:.3f}", f"{r.seconds:.0f}"] for r in run.rounds]
    return markdown_table(header, rows, "r" * len(header))
