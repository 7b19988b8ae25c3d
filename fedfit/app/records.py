"""A sweep's records: what its results pages are made from, kept with the experiment file.

A finished run's folder holds its results (``config.json``, ``rounds.jsonl``, ``summary.json``: a few
hundred KB at most) beside what only a resumed run needs (checkpoints, client states, the final state).
``fedfit sweep FILE --docs`` copies the results of every finished run into
``<FILE's folder>/records/<sweep name>/<run name>/``, a folder of the same shape that goes into version
control with the page. A later sweep takes a recorded run as finished when its run folder is absent:
``--plot-only`` re-makes the page from the records alone, and a sweep runs only what is neither in
``out_dir`` nor recorded, so an experiment longer than one machine's life is finished piece by piece.
A run folder, when present, wins over its record (it is the newer of the two).

A run is its options: a run that another experiment recorded with exactly the options this one gives
(every option but where its output goes and where it ran: ``fedfit.results.option_changed``) is the same
run (same options, same seed, same results), so ``adopt`` records it here under this run's name instead
of running it again.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedfit import atomic

RECORD_FILES = ("config.json", "rounds.jsonl", "summary.json")  # summary.json last: its presence = finished


def records_dir(file: str | Path, name: str) -> Path:
    """Where the records of sweep ``name`` (experiment file ``file``) are kept."""
    return Path(file).parent / "records" / name


def finished(folder: Path) -> bool:
    return (folder / "summary.json").is_file()


def record(run_dir: str | Path, records: str | Path) -> Path:
    """Copy the results of the finished run ``run_dir`` into ``records/<its name>/`` (each file written
    atomically, ``summary.json`` last, so a kill leaves the record unfinished, never half new); returns it."""
    src = Path(run_dir)
    if not finished(src):
        raise FileNotFoundError(f"{src}: not a finished run (no summary.json)")
    return _write(Path(records) / src.name, {f: (src / f).read_bytes() for f in RECORD_FILES})


def _write(dst: Path, files: dict[str, bytes]) -> Path:
    """Write a record's files (``RECORD_FILES`` order: summary.json, the mark of a finished one, last)."""
    (dst / "summary.json").unlink(missing_ok=True)
    for f in RECORD_FILES:
        atomic.write_bytes(dst / f, files[f])
    return dst


def results_of(cfg: dict[str, Any], records: str | Path | None = None) -> Path | None:
    """The folder holding the finished results of run ``cfg``: its run folder (``out_dir/name``) when that
    has finished, else its record in ``records`` (when given) when that has, else None."""
    folders = [Path(cfg["out_dir"]) / cfg["name"]] + ([Path(records) / cfg["name"]] if records is not None else [])
    return next((f for f in folders if finished(f)), None)


def same_run(record: Path, cfg: dict[str, Any]) -> bool:
    """Whether the finished ``record`` was made with ``cfg``'s options: every option that is not free to
    differ (``fedfit.results.option_changed``) is in its config.json, with the same value."""
    from fedfit.config import defaults
    from fedfit.results import RunFormatError, free_on_resume, option_changed

    try:
        saved = json.loads((record / "config.json").read_text(encoding="utf-8"))
        return (finished(record) and all(k in saved for k in set(defaults()) - free_on_resume())
                and option_changed(record, cfg) is None)
    except (OSError, ValueError, RunFormatError):
        return False


def adopt(cfg: dict[str, Any], records: str | Path) -> Path | None:
    """When run ``cfg`` has no results (``results_of``) and another experiment's records (the folders beside
    ``records``) hold the same run (``same_run``), copy it into ``records/<cfg's name>/`` with its name,
    output folder and tracker group made this run's; returns the record it was copied from, else None."""
    records = Path(records)
    if results_of(cfg, records) is not None or not records.parent.is_dir():
        return None
    for other in sorted(records.parent.glob("*/*")):
        if other.parent != records and same_run(other, cfg):
            saved = json.loads((other / "config.json").read_text(encoding="utf-8"))
            saved.update({k: cfg[k] for k in ("name", "out_dir", "tracker_group") if k in cfg})
            files = {f: (other / f).read_bytes() for f in RECORD_FILES}
            files["config.json"] = json.dumps(saved, indent=2, sort_keys=True, default=str).encode()
            _write(records / cfg["name"], files)
            return other
    return None
