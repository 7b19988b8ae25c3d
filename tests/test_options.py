"""Every option is declared once (``fedfit/options/``); the files derived from the declarations
(defaults.toml, option_types.py, pyproject's Flower app config, the options reference page) are
regenerated here and must not differ from the files in the tree."""
import dataclasses
from pathlib import Path

import pytest

from fedfit import options
from fedfit.app import generated

ROOT = Path(__file__).resolve().parents[1]


def test_every_derived_file_is_current():
    assert generated.stale(ROOT) == [], "stale files derived from fedfit/options/: run `python scripts/gen_options.py`"


def test_a_changed_declaration_makes_every_derived_file_stale(monkeypatch):
    changed = dict(options.OPTIONS)
    changed["shots"] = dataclasses.replace(changed["shots"], default=7, help="changed help")
    monkeypatch.setattr(options, "OPTIONS", changed)
    assert sorted(p.name for p in generated.stale(ROOT)) == ["defaults.toml", "options.md", "pyproject.toml"]
    changed["shots"] = dataclasses.replace(changed["shots"], default=7.5)  # a new type
    assert "option_types.py" in {p.name for p in generated.stale(ROOT)}


def test_every_group_module_is_listed_and_every_option_declared_once():
    modules = {p.stem for p in (ROOT / "fedfit" / "options").glob("*.py")} - {"__init__", "spec", "derived"}
    assert modules == set(options.GROUPS)
    assert len(options.OPTIONS) == sum(len(opts) for _, opts in options.groups().values())


def test_an_option_declared_twice_or_with_a_default_outside_its_choices_is_refused(monkeypatch):
    import importlib
    import types

    twice = types.SimpleNamespace(GROUP="x", OPTIONS=(options.Option("shots", 1, "again"),))
    real = importlib.import_module

    monkeypatch.setattr(options, "GROUPS", (*options.GROUPS, "twice"))
    monkeypatch.setattr(options.importlib, "import_module",
                        lambda name: twice if name == "fedfit.options.twice" else real(name))
    with pytest.raises(RuntimeError, match="'shots' is declared twice"):
        options._declared()
    twice.OPTIONS = (options.Option("engine2", "nope", "x", choices=("a", "b")),)
    with pytest.raises(RuntimeError, match="'engine2': default 'nope' is not one of its choices"):
        options._declared()


def test_the_defaults_file_reads_back_as_the_defaults():
    import tomllib

    assert tomllib.loads((ROOT / "fedfit" / "defaults.toml").read_text()) == options.defaults()


def test_simulate_help_lists_every_option_by_group(capsys):
    from fedfit.app import cli

    with pytest.raises(SystemExit):
        cli.main(["simulate", "--help"])
    text = capsys.readouterr().out
    for name in options.OPTIONS:
        assert name in text, name
