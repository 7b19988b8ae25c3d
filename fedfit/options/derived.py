"""The files derived from the options' declarations (``fedfit.options``), as text: ``fedfit/defaults.toml``
(to read: every default with its help, by group), ``fedfit/option_types.py`` (``Options``, a ``TypedDict``
for type checkers) and pyproject's ``[tool.flwr.app.config]``. ``scripts/gen_options.py`` writes them (and
the options reference page); ``tests/test_options.py`` fails when one is stale."""
from __future__ import annotations

import json
import textwrap
from typing import Any

from fedfit import options

GENERATOR = "python scripts/gen_options.py"
_COMMENT_AT = 31  # column of a default's help comment in defaults.toml
_WIDTH = 118


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v) if isinstance(v, str) else repr(v)


def _comment(help_text: str, first: str) -> list[str]:
    """``first`` (``key = value``) with ``help_text`` as its comment, wrapped; list items indented by 2."""
    pad = " " * _COMMENT_AT
    lines: list[str] = []
    for i, para in enumerate(help_text.split("\n")):
        indent = "  " if i else ""
        width = _WIDTH - _COMMENT_AT - 2 - len(indent)
        for j, chunk in enumerate(textwrap.wrap(para, width, break_on_hyphens=False) or [""]):
            lines.append(indent + ("" if j == 0 or not i else "  ") + chunk)
    start = first.ljust(_COMMENT_AT - 1) + " " if len(first) < _COMMENT_AT else first + " "
    out = [f"{start}# {lines[0]}"] if lines[0] else [first]
    return out + [f"{pad}# {line}" for line in lines[1:]]


def defaults_toml() -> str:
    """``fedfit/defaults.toml``: every option's default with its help as a comment, by group."""
    out = ["# fedfit's defaults: every option of a run, by component. GENERATED from the options' declaration",
           f"# (fedfit/options/, one module per component) by `{GENERATOR}`: edit the declaration, not this",
           "# file (tests/test_options.py fails when it is stale). `fedfit simulate --config FILE key=value ...`",
           "# overrides these; docs/reference/options.md explains each one."]
    for _, (title, opts) in options.groups().items():
        out += ["", f"# --- {title} ---"]
        for o in opts:
            out += _comment(o.help, f"{o.name} = {toml_value(o.default)}")
    return "\n".join(out) + "\n"


def option_types() -> str:
    """``fedfit/option_types.py``: the resolved options as a ``TypedDict``, one key per option."""
    out = ['"""``Options``: the resolved options as a ``TypedDict`` (one key per option, typed as its default), so',
           '``cfg: Options`` gives a type checker every ``cfg["key"]`` (``mypy``, ``pyright``). GENERATED from the',
           f"options' declaration (``fedfit.options``) by ``{GENERATOR}``; do not edit",
           '(``tests/test_options.py`` fails when it is stale)."""',
           "from __future__ import annotations", "", "from typing import TypedDict", "", "",
           "class Options(TypedDict):"]
    out += [f"    {name}: {o.type.__name__}" for name, o in options.OPTIONS.items()]
    return "\n".join(out) + "\n"


APP_CONFIG = "[tool.flwr.app.config]\n"


def app_config(pyproject: str) -> str:
    """``pyproject`` (the file's text) with its ``[tool.flwr.app.config]`` table (the last table of the file)
    rewritten from the declarations: Flower accepts run-config overrides only for keys listed there."""
    head, sep, _ = pyproject.partition(APP_CONFIG)
    if not sep:
        raise ValueError(f"pyproject.toml has no {APP_CONFIG.strip()} table (it must be the file's last table)")
    return head + APP_CONFIG + "".join(f"{name} = {toml_value(o.default)}\n" for name, o in options.OPTIONS.items())
