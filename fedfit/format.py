"""Text formatting shared by tables and logs: byte counts, fractions as percent, Markdown tables."""
from __future__ import annotations

from typing import Sequence


def human_bytes(n: float) -> str:
    """Bytes in decimal units (1 KB = 1000 B), 3 significant digits: 999 -> '999 B', 1500 -> '1.5 KB', 2e9 -> '2 GB'."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} B"


def pct(x: float | None, missing: str = "") -> str:
    """A fraction as percent with one decimal, no sign: 0.1234 -> '12.3'; None -> ``missing``."""
    return missing if x is None else f"{100 * x:.1f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str | None]], align: str = "") -> str:
    """A Markdown table, no trailing newline. ``align`` has a letter per column: 'r' right-aligns it
    (``---:``), any other or none leaves the default (``---``). A None cell is left blank (``| |``)."""
    def line(cells: Sequence[str | None]) -> str:
        return "|" + "|".join(" " if c is None else f" {c} " for c in cells) + "|"

    rule = "|" + "|".join("---:" if align[i:i + 1] == "r" else "---" for i in range(len(header))) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
