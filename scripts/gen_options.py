"""Rewrite every file derived from the options' declaration (fedfit/options/): fedfit/defaults.toml,
fedfit/option_types.py, pyproject.toml's [tool.flwr.app.config] and docs/reference/options.md
(fedfit.app.generated). tests/test_options.py fails when one of them is stale."""
from pathlib import Path

from fedfit.app.generated import option_files

if __name__ == "__main__":
    for path, text in option_files(Path(__file__).resolve().parents[1]).items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
        else:
            print(f"current {path}")
