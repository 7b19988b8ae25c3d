"""Rewrite the documentation pages generated from the code (``fedfit.app.docs``): the options reference
(docs/reference/options.md, from the options' declaration) and the results index (docs/results/index.md,
from the results pages present). Results pages themselves come from ``fedfit sweep FILE --docs``.
tests/test_docs.py fails when these pages are stale."""
from pathlib import Path

from fedfit.app.docs import write_generated

if __name__ == "__main__":
    for path in write_generated(Path(__file__).resolve().parents[1] / "docs"):
        print(f"wrote {path}")
