"""The documentation site (docs/, mkdocs.yml): generated pages current, every option with help, each
command's help pointing to its page, ``fedfit sweep --docs`` writing a results page, the tutorial's code
running as written. (``mkdocs build --strict`` runs in .ci/run; the browser check is test_docs_browser.py.)"""
import re
from pathlib import Path

import pytest

from fedfit.app import docs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_every_option_has_help_text():
    options = docs.declared_options()
    assert len(options) > 50 and not docs.missing_help(options), (
        f"options without help text (fedfit/options/): {docs.missing_help(options)}")
    page = (DOCS / docs.OPTIONS_PAGE).read_text()
    row = next(line for line in page.splitlines() if '<a id="dirichlet_alpha"></a>' in line)
    assert "| `1.0` | float | > 0 | partition = dirichlet: concentration" in row  # default, type, rule, help


def test_an_option_added_without_help_is_found():
    from fedfit.options import Option

    declared = [Option("shots", 5, "support images per class", ge=1, group="data"),
                Option("queries", 10, "query images per class; -1 = every test image\nof its classes", ge=1,
                       special=(-1,), hint="-1: all", group="data"),
                Option("new_option", 3, "", group="data"),
                Option("engine", "ray", "ray | inline", choices=("ray", "inline"), group="engine")]
    options = docs.declared_options(declared)
    assert docs.missing_help(options) == ["new_option"]
    by = {o.name: o for o in options}
    assert by["queries"].rule == ">= 1, or -1 (-1: all)" and by["engine"].rule == "one of: `ray`, `inline`"
    assert [o.group for o in options] == ["data"] * 3 + ["engine"]
    page = docs.options_page(options)
    assert page.index("## Data") < page.index('<a id="new_option"></a>') < page.index("## Engine")
    assert "every test image<br>of its classes |" in page


def test_the_results_index_is_current():
    assert (DOCS / docs.RESULTS / "index.md").read_text() == docs.results_index(DOCS), (
        f"docs/results/index.md is stale: run `{docs.GENERATOR}`")


def _commands(parser, prefix=()):
    """(command words, its argparse parser) for the program and every command and sub-command."""
    yield prefix, parser
    for action in parser._actions:
        if getattr(action, "choices", None) and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))


def test_each_command_help_ends_with_the_page_that_explains_it():
    from fedfit.app.cli import build_parser

    seen = []
    for words, parser in _commands(build_parser()):
        last = parser.format_help().rstrip().splitlines()[-1]
        m = re.fullmatch(r"Docs: (docs/\S+\.md)", last)
        assert m, f"fedfit {' '.join(words)} --help ends with {last!r}, not its docs page"
        assert (ROOT / m.group(1)).is_file(), f"fedfit {' '.join(words)} --help points to a missing {m.group(1)}"
        seen.append(" ".join(words))
    assert {"", "simulate", "sweep", "deploy init"} <= set(seen) and len(seen) >= 14


def _fake_sweep(root: Path, toml: str):
    """An experiment file in ROOT/experiments with finished fake runs (no federation): its path."""
    from fedfit.app.sweeps import load_sweep
    from fedfit.results import RoundRecord, RunWriter

    f = root / "experiments" / "tiny.toml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(toml.replace("OUT", str(root / "runs")))
    _, cfgs = load_sweep(f)
    for c in cfgs:
        w = RunWriter(f"{c['out_dir']}/{c['name']}", c)
        w.write(RoundRecord(round=0, acc_mean=0.5))
        acc = {"fit": 0.7, "head-only": 0.5}[c["method"]] + 0.02 * c["seed"]
        w.write(RoundRecord(round=1, clients=2, bytes_up_wire=200, bytes_down_wire=100, cum_bytes_wire=300,
                            acc_mean=acc, seconds=1.0))
        w.finish(shared_parameters=20544, personal_parameters=0)
    return f


TINY = ('name = "tiny"\ndescription = "FiT against the frozen head, on fake runs"\n'
        'notes = """FiT gains **20 points** here (fake runs)."""\n'
        '[base]\nout_dir = "OUT"\n[grid]\nmethod = ["fit", "head-only"]\nseed = [0, 1]\n')


def test_sweep_docs_writes_the_results_page_and_its_figures_and_leaves_readme_alone(tmp_path, capsys):
    from fedfit.app import cli

    readme = tmp_path / "README.md"
    readme.write_text("# project\n<!-- results:tiny:start -->\nold\n<!-- results:tiny:end -->\n")
    f = _fake_sweep(tmp_path, TINY)
    (tmp_path / "experiments" / "tiny.md").write_text("More on what it means, from the Markdown file beside it.\n")
    out = tmp_path / "site-docs"
    assert cli.main(["sweep", str(f), "--plot-only", "--docs", "--docs-dir", str(out)]) == 0
    assert f"results page: {out}/results/tiny.md" in capsys.readouterr().out
    page = (out / "results" / "tiny.md").read_text()
    assert page.startswith("# tiny\n\nFiT against the frozen head, on fake runs\n")
    assert "Regenerate with `fedfit sweep experiments/tiny.toml --docs --docs-dir site-docs` (4 finished runs" in page
    means = page.index("## What it means")
    assert means < page.index("FiT gains **20 points**") < page.index("from the Markdown file beside it")
    assert "| method=fit | 2 | 20,544 | 0 | 50.0 | 71.0 | 1.0 |" in page  # the seed-aggregated table
    for fig in ("tiny_accuracy_vs_round.png", "tiny_accuracy_vs_bytes.png"):
        assert f"](figures/{fig})" in page and (out / "results" / "figures" / fig).stat().st_size > 1000
    assert 'method = ["fit", "head-only"]' in page  # the experiment file, shown
    index = (out / "results" / "index.md").read_text()
    assert "| [tiny](tiny.md) | FiT against the frozen head, on fake runs |" in index
    assert readme.read_text().endswith("old\n<!-- results:tiny:end -->\n")  # README untouched
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "index.md", "tiny.md", "tiny_accuracy_vs_bytes.png", "tiny_accuracy_vs_round.png"]


def test_a_page_is_remade_from_its_records_when_the_run_folders_are_gone(tmp_path, monkeypatch):
    """--docs records every finished run's results beside the experiment file (experiments/records/NAME/RUN:
    config, rounds, summary; no checkpoints); with the run folders gone, --plot-only re-makes the same page
    from the records, and a sweep skips what is recorded, running only the rest."""
    import shutil

    import fedfit

    f = _fake_sweep(tmp_path, TINY)
    (tmp_path / "runs" / "tiny" / "method=fit_seed=0" / "checkpoint.pkl").write_bytes(b"state")
    fedfit.sweep(f, plot_only=True, docs=tmp_path / "docs", progress=lambda s: None)
    page = (tmp_path / "docs" / "results" / "tiny.md").read_text()
    assert "The runs' results are recorded in `experiments/records/tiny/`" in page
    records = tmp_path / "experiments" / "records" / "tiny"
    assert sorted(p.relative_to(records).as_posix() for p in records.rglob("*") if p.is_file()) == sorted(
        f"method={m}_seed={s}/{n}" for m in ("fit", "head-only") for s in (0, 1)
        for n in ("config.json", "rounds.jsonl", "summary.json"))
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "docs" / "results" / "tiny.md").unlink()
    fedfit.sweep(f, plot_only=True, docs=tmp_path / "docs", progress=lambda s: None)
    assert (tmp_path / "docs" / "results" / "tiny.md").read_text() == page
    shutil.rmtree(records / "method=head-only_seed=1")  # one run not recorded: the sweep runs it alone
    ran = []
    monkeypatch.setattr("strategies.simulate.simulate", lambda cfg, **kw: ran.append(cfg["name"]))
    lines = []
    fedfit.sweep(f, progress=lines.append)
    assert ran == ["method=head-only_seed=1"] and [ln for ln in lines if ln.startswith("[")] == [
        f"[{i}/4] {r}: recorded in {records / r}, skipped"
        for i, r in ((1, "method=fit_seed=0"), (2, "method=fit_seed=1"), (3, "method=head-only_seed=0"))] + [
        "[4/4] method=head-only_seed=1"]


def test_a_run_another_experiment_recorded_with_the_same_options_is_not_run_again(tmp_path, monkeypatch):
    """A run is its options: another experiment's record made with exactly this run's options is recorded
    here under this run's name (its config renamed, its rounds as they were); a run with any option of its
    own is run."""
    import json

    import fedfit

    f = _fake_sweep(tmp_path, TINY)
    fedfit.sweep(f, plot_only=True, docs=tmp_path / "docs", progress=lambda s: None)  # records tiny's 4 runs
    other = f.with_name("other.toml")
    other.write_text(f'[base]\nout_dir = "{tmp_path / "elsewhere"}"\n[grid]\nseed = [0, 1]\n'
                     '[[run]]\nname = "fit-default"\nmethod = "fit"\n[[run]]\nname = "fit-fast"\nmethod = "fit"\n'
                     'lr = 0.01\n')
    ran, lines = [], []
    monkeypatch.setattr("strategies.simulate.simulate", lambda cfg, **kw: ran.append(cfg["name"]))
    fedfit.sweep(other, progress=lines.append)
    records = tmp_path / "experiments" / "records"
    assert ran == ["fit-fast_seed=0", "fit-fast_seed=1"]
    for seed in (0, 1):
        mine, theirs = records / "other" / f"fit-default_seed={seed}", records / "tiny" / f"method=fit_seed={seed}"
        assert f"fit-default_seed={seed}: the same run (same options) is recorded in {theirs}: recorded here too" in lines
        assert (mine / "rounds.jsonl").read_bytes() == (theirs / "rounds.jsonl").read_bytes()
        cfg = json.loads((mine / "config.json").read_text())
        assert cfg["name"] == f"fit-default_seed={seed}" and cfg["out_dir"] == str(tmp_path / "elsewhere" / "other")
        assert {k: v for k, v in cfg.items() if k not in ("name", "out_dir", "tracker_group")} == {
            k: v for k, v in json.loads((theirs / "config.json").read_text()).items()
            if k not in ("name", "out_dir", "tracker_group")}
    assert not (records / "other" / "fit-fast_seed=0").exists()


def test_sweep_readme_without_its_markers_stops_before_any_run(tmp_path, capsys):
    from fedfit.app import cli

    readme = tmp_path / "README.md"
    readme.write_text("# project, no results section\n")
    f = _fake_sweep(tmp_path, TINY)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert cli.main(["sweep", str(f), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no <!-- results:tiny:start --> ... <!-- results:tiny:end --> markers" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing ran, nothing written


def test_a_results_page_without_notes_says_how_to_write_them(tmp_path):
    import fedfit

    f = _fake_sweep(tmp_path, TINY.replace('notes = """FiT gains **20 points** here (fake runs)."""\n', ""))
    fedfit.sweep(f, plot_only=True, docs=tmp_path / "docs", progress=lambda s: None)
    page = (tmp_path / "docs" / "results" / "tiny.md").read_text()
    assert "Regenerate with `fedfit sweep experiments/tiny.toml --docs` (4 finished runs" in page
    assert "*Not written yet.* Add `notes = " in page and "`experiments/tiny.toml`" in page
    from fedfit.config import ConfigError

    f.write_text("notes = 3\n" + f.read_text())
    with pytest.raises(ConfigError, match="notes must be a string"):
        fedfit.sweep(f, plot_only=True, docs=tmp_path / "docs")


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


@pytest.mark.slow
def test_the_tutorial_runs_as_written(tmp_path, monkeypatch, capsys):
    """Every Python block of docs/tutorial.md, in order, in one namespace (digits, 32 px, inline engine)."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks(DOCS / "tutorial.md")
    assert len(blocks) >= 8
    ns: dict = {"__name__": "tutorial"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/tutorial.md (block {i + 1})", "exec"), ns)
    out = capsys.readouterr().out
    assert "refused:" in out and "unknown option 'roundz'" in out
    assert list(ns["df"]["round"]) == [0, 1, 2] and ns["run"].summary["failures"] == 0
    assert (tmp_path / "runs" / "tutorial" / "first" / "accuracy.png").stat().st_size > 1000
    assert [r.name for r in ns["result"].runs] == ["method=fit", "method=head-only"]
    assert list(ns["summary"]["run"]) == ["method=fit", "method=head-only"]
    assert "| method=fit | 1 |" in ns["result"].table
