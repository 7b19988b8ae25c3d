"""The files derived from the options' one declaration (``fedfit.options``), path -> the text it must hold:
``fedfit/defaults.toml``, ``fedfit/option_types.py``, ``pyproject.toml`` (its ``[tool.flwr.app.config]``)
and the options reference ``docs/reference/options.md``. ``scripts/gen_options.py`` writes them;
``tests/test_options.py`` regenerates them and fails on any difference."""
from __future__ import annotations

from pathlib import Path

from fedfit.app import docs
from fedfit.options import derived


def option_files(root: str | Path) -> dict[Path, str]:
    """Each derived file under the project ``root`` and the text the declarations give it."""
    root = Path(root)
    pyproject = root / "pyproject.toml"
    return {root / "fedfit" / "defaults.toml": derived.defaults_toml(),
            root / "fedfit" / "option_types.py": derived.option_types(),
            pyproject: derived.app_config(pyproject.read_text()),
            root / "docs" / docs.OPTIONS_PAGE: docs.options_page(docs.declared_options())}


def stale(root: str | Path) -> list[Path]:
    """The derived files whose text differs from what the declarations give (or that are missing)."""
    return [p for p, text in option_files(root).items() if not p.is_file() or p.read_text() != text]
