"""The Python API: ``fedfit.run(...)`` runs a federation from a notebook or a script, as ``fedfit simulate``.

    import fedfit
    run = fedfit.run(dataset="digits", image_size=32, rounds=3, engine="inline")
    run.last.acc_mean, run.last.global_acc, run.last.cum_bytes_wire      # the last round's numbers
    [r.acc_mean for r in run.rounds]                                      # accuracy per round
    run.summary["failures"], run.final_state()["adapter/gammas.bn2"]
    again = fedfit.load_run(run.dir)                                      # a run directory read back
    result = fedfit.sweep("experiments/shots.toml", "rounds=3")           # a named experiment, resumable
    result.table, result.figures, [r.last.acc_mean for r in result.runs]

Options are those of ``fedfit/defaults.toml`` (keyword arguments, or a TOML file and then keyword
arguments); they are checked before any work, as on the command line, and a bad one raises
``fedfit.config.ConfigError`` (data: ``DataError``, model: ``BackboneError``, machine:
``ResourceError``). A federation that cannot go on raises ``strategies.loop.FederationError``; client
messages that failed are counted in the returned run (``run.summary["failures"]``), not raised.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from fedfit.config import ConfigError, load_config
from fedfit.results import Run, read_run

load_run = read_run  # fedfit.load_run(dir) -> Run


def run(config: str | Path | None = None, *, resume: str | Path | None = None, overwrite: bool = False,
        verbose: bool = False, **options: Any) -> Run:
    """Run one federation (simulated: the ``engine`` option) and return it read back from its run
    directory. ``config``: a TOML file of options; ``options``: option = value, over the file;
    ``resume``: a run directory to continue after its last complete round (its own options);
    ``overwrite``: start again over existing results."""
    from strategies.simulate import simulate  # Flower and Ray load only when a run starts

    if resume is not None:
        cfg = resume_config(str(resume), None, [f"{k}={v}" for k, v in options.items()])
    else:
        cfg = load_config(config, options)
    summary = simulate(cfg, verbose=verbose, resume=resume is not None, overwrite=overwrite)
    return read_run(summary["run_dir"])


def resume_config(run_dir: str, config: str | None, overrides: list[str]) -> dict:
    """The options a run was started with (its config.json), for ``--resume``; changing them is refused."""
    import json

    from fedfit.config import defaults

    d = Path(run_dir)
    if config or overrides:
        raise ConfigError("--resume continues a run with its own options (config.json): drop --config and key=value")
    try:
        saved = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{d} is not a fedfit run directory (config.json: {e})") from None
    known = defaults()
    cfg = load_config(overrides={k: v for k, v in saved.items() if k in known})
    return {**cfg, "out_dir": str(d.resolve().parent), "name": d.resolve().name}


@dataclass
class SweepResult:
    """A sweep read back: its finished ``runs`` (in the file's order), the ``failed`` run names, the
    Markdown ``table`` (mean +- std over seeds; bounds and stability tables when the file asks) and the
    ``figures`` written (PNG + SVG, in ``OUT_DIR/SWEEP/plots``)."""

    name: str
    runs: list[Run]
    failed: list[str] = field(default_factory=list)
    table: str = ""
    figures: list[Path] = field(default_factory=list)


def sweep_configs(file: str | Path, *overrides: str) -> tuple[str, list[dict[str, Any]]]:
    """The sweep's name and its runs' resolved options, every run checked (``ConfigError`` names the run)."""
    from fedfit.app.sweeps import load_sweep
    from strategies import check_options

    name, configs = load_sweep(file, list(overrides))
    for c in configs:
        try:
            check_options(c)
        except ValueError as e:
            raise ConfigError(f"{file}: run {c['name']}: {e}") from None
    return name, configs


def sweep(file: str | Path, *overrides: str, readme: str | Path | None = None, plot_only: bool = False,
          title: str | None = None, verbose: bool = False, progress: Callable[[str], None] = print,
          only: Sequence[str] = (), docs: str | Path | None = None) -> SweepResult:
    """Run the experiment ``file`` (``experiments/NAME.toml``): every run not finished before, a run
    stopped half-way continued after its last complete round, a failed run reported while the others go
    on (a run recorded beside the file, ``fedfit.app.records``, counts as finished; one another experiment
    recorded with the same options is recorded here too); then its figures and tables (``docs``: a docs
    folder, ``docs/``, whose results page ``results/NAME.md`` is written with its figures and the results
    index, nothing else touched; ``readme``: also written into that README's ``results:NAME`` section,
    figures copied to ``docs/figures``; with either, every finished run's results are recorded).
    ``overrides``: ``key=value`` applied to every run; ``plot_only``: only redo figures and tables;
    ``only``: run just the runs whose names match one of these shell patterns (the tables still take every
    finished run). Every run's options are checked before the first starts."""
    import fnmatch
    import shutil

    from fedfit.app.records import adopt, finished, record, records_dir, results_of
    from fedfit.plot import plot_runs
    from fedfit.results import holds_results
    from fedfit.app.sweeps import (aggregate, bound_levels, bounds_table, load_spec, markdown_table, replace_section,
                              run_sweep, stability_table, target_table)

    name, configs = sweep_configs(file, *overrides)
    records = records_dir(file, name)
    if readme:  # checked before any run: the section the results go to must exist
        text = Path(readme).read_text() if Path(readme).is_file() else None
        marker = f"<!-- results:{name}:start -->"
        if text is None or marker not in text or f"<!-- results:{name}:end -->" not in text:
            raise ConfigError(f"--readme {readme}: " + ("no such file" if text is None else
                              f"no {marker} ... <!-- results:{name}:end --> markers; add them where the results "
                              f"go, or write the results page with --docs"))
    for c in configs:  # a run another experiment recorded with the same options is this run: not run twice
        same = adopt(c, records)
        if same is not None:
            progress(f"{c['name']}: the same run (same options) is recorded in {same}: recorded here too")
    failed: list[str] = []
    if not plot_only:
        from strategies.simulate import simulate

        chosen = [c for c in configs if not only or any(fnmatch.fnmatchcase(c["name"], p) for p in only)]
        if not chosen:
            raise ConfigError(f"{file}: no run matches --only {' '.join(only)}")
        progress(f"sweep {name}: {len(chosen)} runs -> {Path(configs[0]['out_dir'])}")
        failed = run_sweep(chosen, lambda cfg: simulate(cfg, verbose=verbose,
                                                         resume=holds_results(Path(cfg["out_dir"]) / cfg["name"])),
                           progress=progress, records=records)
    if docs is not None or readme:  # the page's data goes into version control with it
        for c in configs:
            if finished(Path(c["out_dir"]) / c["name"]):
                record(Path(c["out_dir"]) / c["name"], records)
    dirs = [d for d in (results_of(c, records) for c in configs) if d is not None]
    if not dirs:
        return SweepResult(name, [], failed)
    out = Path(configs[0]["out_dir"]) / "plots"
    spec = load_spec(file)
    figures = plot_runs(dirs, out, title=title, merge_seeds=True,  # one line per group: mean over seeds
                        references=bound_levels(dirs, spec["bounds"]) if spec.get("bounds") else None)
    table = markdown_table(aggregate(dirs))
    if spec.get("bounds"):
        table += "\n\n" + bounds_table(dirs, spec["bounds"])
    if spec.get("stability"):
        table += ("\n\nLast round against round 0 and the best round. Paired: the last minus round 0 on the same "
                  "queries, mean +- SE over the training clients (personalized) or over the images (global). ok: "
                  "yes = >= round 0 and within 1 point of the best; noise = within 1 point of the best, under "
                  "round 0 by less than 2 SE. Pooled rows: every client (image) of every seed of a group, "
                  "round 0 and last as means over seeds:\n\n" + stability_table(dirs))
    if spec.get("target") is not None:
        table += (f"\n\nTime to {100 * spec['target']:.0f}% personalized accuracy on the simulated clock (the first "
                  f"round at or above it; fedfit/clock.py):\n\n" + target_table(dirs, float(spec["target"])))
    (out / "summary.md").write_text(table + "\n")
    if docs is not None:
        from fedfit.app.docs import write_results_page

        write_results_page(docs, file, name, spec, table, figures, len(dirs), failed, overrides)
    if readme:
        from fedfit.app.docs import shown_figures

        readme = Path(readme)
        fig_dir = readme.parent / "docs" / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)
        shown = []
        for f in shown_figures(figures, target=spec.get("target") is not None):
            dst = fig_dir / f"{name}_{f.name}"
            shutil.copyfile(f, dst)
            shown.append(f"![{f.stem.replace('_', ' ')}]({dst.relative_to(readme.parent).as_posix()})")
        body = (f"Regenerate with `fedfit sweep {file} --readme {readme}` "
                f"({len(dirs)} runs).\n\n{table}\n\n" + "\n".join(shown))
        readme.write_text(replace_section(readme.read_text(), f"results:{name}", body))
    return SweepResult(name, [read_run(d) for d in dirs], failed, table, figures)
