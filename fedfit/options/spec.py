"""``Option``: one run option declared once - its name, default (whose type is the option's type), one
line of help, what values it may hold (bounds, special values and what they mean, choices) and its unit.
Every other view of the options is derived from these declarations (``fedfit.options``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

Value = Union[bool, int, float, str]


@dataclass(frozen=True)
class Option:
    """A run option. ``help`` is plain text; a newline starts an item of a list. ``special``: values allowed
    besides the bounds (e.g. -1: "decide for me"), explained by ``hint``. ``choices``: the only names allowed
    (names that come from a registry - data sets, adapters, heads, strategies, methods - are checked against
    it in code and listed in ``help``). ``group`` is set by the group module that declares the option."""

    name: str
    default: Value
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    special: tuple[Value, ...] = ()
    hint: str = ""
    choices: tuple[str, ...] = ()
    unit: str = ""
    group: str = field(default="", compare=False)

    @property
    def type(self) -> type:
        return type(self.default)

    def rule(self) -> dict[str, Any]:
        """The rule as ``fedfit.config.check_rule`` reads it: ``ge`` / ``gt`` / ``le`` / ``lt``, ``or`` (the
        special values), ``hint``, ``choices``, ``unit``; {} when the option has none."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ("ge", "gt", "le", "lt") if getattr(self, k) is not None}
        if self.special:
            out["or"] = list(self.special)
        if self.choices:
            out["choices"] = list(self.choices)
        if self.hint:
            out["hint"] = self.hint
        if self.unit:
            out["unit"] = self.unit
        return out
