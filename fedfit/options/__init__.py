"""Every run option, declared once, grouped by the component that owns it: one module per group in this
package (``data.py``, ``model.py``, ``training.py``, ``federation.py``, ... and one per adapter with options
of its own), each a ``GROUP`` title and a tuple of ``Option`` (``fedfit.options.spec``): default (and so
type), help, bounds, special values, choices, unit.

Everything else is derived from these declarations: the resolved defaults and the rules that
``fedfit.config`` checks (here, at import), and the generated files that ``python scripts/gen_options.py``
rewrites and ``tests/test_options.py`` finds current - ``fedfit/defaults.toml`` (every default with its
help, to read), ``fedfit/option_types.py`` (the typed ``Options``), pyproject's
``[tool.flwr.app.config]`` (Flower accepts run-config keys listed there only) and the options reference
page ``docs/reference/options.md``; ``fedfit simulate --help`` lists them by group.

A new option is one ``Option(...)`` line in its group's module; a new group is one module plus its name
in ``GROUPS``.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from fedfit.options.spec import Option, Value

__all__ = ["GROUPS", "OPTIONS", "Option", "Value", "defaults", "groups", "rules"]

# the group modules, in the order the options are listed (defaults, docs, --help)
GROUPS = ("run", "data", "model", "iciia", "case", "training", "bounds", "federation", "communication",
          "privacy", "faults", "clock", "evaluation", "engine", "output")


def _declared() -> dict[str, Option]:
    out: dict[str, Option] = {}
    for name in GROUPS:
        module = importlib.import_module(f"fedfit.options.{name}")
        for option in module.OPTIONS:
            if option.name in out:
                raise RuntimeError(f"option {option.name!r} is declared twice (fedfit/options/{name}.py and "
                                   f"fedfit/options/{out[option.name].group}.py)")
            if option.choices and option.default not in option.choices:
                raise RuntimeError(f"option {option.name!r}: default {option.default!r} is not one of its choices")
            out[option.name] = dataclasses.replace(option, group=name)
    return out


OPTIONS: dict[str, Option] = _declared()  # name -> its declaration, in declaration order


def defaults() -> dict[str, Any]:
    """Every option's default, in declaration order (a fresh dict)."""
    return {name: o.default for name, o in OPTIONS.items()}


def rules() -> dict[str, dict[str, Any]]:
    """Option -> its rule (``Option.rule``), for the options that have one."""
    return {name: o.rule() for name, o in OPTIONS.items() if o.rule()}


def groups() -> dict[str, tuple[str, list[Option]]]:
    """Group module name -> (its title, its options in order)."""
    out: dict[str, tuple[str, list[Option]]] = {}
    for name in GROUPS:
        title = importlib.import_module(f"fedfit.options.{name}").GROUP
        out[name] = (title, [o for o in OPTIONS.values() if o.group == name])
    return out
