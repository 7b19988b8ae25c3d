"""The documentation site's generated pages (``docs/``, built by MkDocs from ``mkdocs.yml``).

- ``docs/reference/options.md``: every option, its default, type, rule and help, grouped by component,
  from the options' declaration (``declared_options``; ``scripts/gen_docs.py`` writes the page and
  ``tests/test_docs.py`` fails when it is stale or an option has no help);
- ``docs/results/NAME.md``: one page per experiment, written by ``fedfit sweep FILE --docs``
  (``write_results_page``: its command, tables, figures and what they mean), and ``docs/results/index.md``
  listing them (``results_index``).

The options page reads the options' one declaration (``fedfit.options``: one module per component, each
``Option`` with its default, help and rule) through ``declared_options``.
"""
from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fedfit.app.records import records_dir
from fedfit.options import Option

DOCS_PAGE = "docs/{}.md"  # where the page explaining a command lives (the site's source; `mkdocs serve` shows it)
OPTIONS_PAGE = Path("reference") / "options.md"  # under the docs folder
RESULTS = Path("results")  # under the docs folder: one page per experiment, figures/ beside them
GENERATOR = "python scripts/gen_docs.py"  # the results index (the options page: scripts/gen_options.py)
OPTIONS_GENERATOR = "python scripts/gen_options.py"


def see(page: str) -> str:
    """The last line of a command's help: the docs page that explains it (``page`` without ``.md``)."""
    return f"Docs: {DOCS_PAGE.format(page)}"


def options_epilog(width: int = 100) -> str:
    """The options a run takes, by group, for a command's ``--help`` (from ``fedfit.options``)."""
    import textwrap

    from fedfit.options import groups

    lines = ["options, as key=value (defaults and rules: docs/reference/options.md, or fedfit/defaults.toml):"]
    for name, (_, opts) in groups().items():
        lines += textwrap.wrap(", ".join(o.name for o in opts), width, initial_indent=f"  {name}: ",
                               subsequent_indent=" " * (len(name) + 4), break_on_hyphens=False)
    return "\n".join(lines)


# --- the options reference -------------------------------------------------------------------------

@dataclass(frozen=True)
class OptionDoc:
    """One option as the reference page shows it."""

    name: str
    group: str      # the component it belongs to (a section of the page)
    default: Any
    type: str       # str, int, float, bool
    rule: str       # what it may hold, in words ("" = checked in code: a registry's names, rules between options)
    help: str       # plain text; a newline starts an item of a list


_BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def rule_text(rule: dict[str, Any]) -> str:
    """A rule of ``options.toml`` in words: ``>= 0, or -1 (hint); unit: rounds`` / ``one of: a, b``."""
    if not rule:
        return ""
    parts = []
    if "choices" in rule:
        parts.append("one of: " + ", ".join(f"`{c}`" for c in rule["choices"]))
    bounds = [f"{_BOUND_WORDS[k]} {v:g}" for k, v in rule.items() if k in _BOUND_WORDS]
    if bounds:
        parts.append(" and ".join(bounds))
    if rule.get("or"):
        parts.append("or " + " / ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in rule["or"]))
    text = ", ".join(parts)
    if "hint" in rule:
        text += f" ({rule['hint']})"
    if "unit" in rule:
        text += f"; unit: {rule['unit']}"
    return text


def declared_options(options: Sequence[Option] | None = None) -> list[OptionDoc]:
    """Every option in declaration order (``fedfit.options``; or ``options``, with their ``group`` set)."""
    if options is None:
        from fedfit.options import OPTIONS, groups

        titles = {name: title for name, (title, _) in groups().items()}
        options = list(OPTIONS.values())
    else:
        titles = {}
    return [OptionDoc(name=o.name, group=titles.get(o.group, o.group or "options"), default=o.default,
                      type=o.type.__name__, rule=rule_text(o.rule()), help=o.help) for o in options]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _sentence(text: str) -> str:
    """``text`` with a capital first letter, unless its first word is a name (a path, a file, an option)."""
    first = text.split(" ", 1)[0]
    return text if any(c in first for c in "/._") else text[:1].upper() + text[1:]


def _text(text: str) -> str:
    """Plain text as Markdown that shows it as written (``<method>`` is not an HTML tag)."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_page(options: Sequence[OptionDoc]) -> str:
    """The options reference (Markdown): how options are given, then one table per group, one row per
    option with an anchor (``options.md#NAME``)."""
    out = ["# Options reference", "",
           f"<!-- Generated by `{OPTIONS_GENERATOR}` from the options' declaration; do not edit: "
           f"tests/test_options.py fails when this page is stale. -->", "",
           "Every option of a run, with its default, its type, what it may hold and what it does. The page is "
           "generated from the options' one declaration (`fedfit/options/`: one module per component, each "
           "option's default, help, bounds, special values and unit); "
           f"`{OPTIONS_GENERATOR}` rewrites it with the other files derived from the declaration, and a test "
           "fails when it is stale or an option has no help.", "",
           "Give options as `key=value` on the command line (`fedfit simulate rounds=20 shots=10`), in a TOML "
           "file (`fedfit simulate --config my.toml`, then `key=value` over it), as keywords from Python "
           "(`fedfit.run(rounds=20)`) or in an experiment file's `[base]` and `[grid]` "
           "([Run an experiment](../how-to/experiments.md)). Every value is checked before any work: an unknown "
           "key, a wrong type or a value outside its rule stops with one line naming the option, the rule and the "
           "value. Rules between options (e.g. `clients_per_round <= num_clients`) and names that come from a "
           "registry (data sets, adapters, heads, strategies) are checked in code; their rule cell is empty.", ""]
    groups: dict[str, list[OptionDoc]] = {}
    for o in options:
        groups.setdefault(o.group, []).append(o)
    for group, opts in groups.items():
        head, note = re.match(r"([^:(]*)[:(]?\s*(.*?)\)?$", group).groups()  # "clock (what it is)" / "data: what"
        out += [f"## {_sentence(head.strip())}", ""] + ([f"{_sentence(note)}.", ""] if note else [])
        out += ["| option | default | type | rule | what it does |", "|---|---|---|---|---|"]
        for o in opts:
            out.append(f'| <a id="{o.name}"></a>`{o.name}` | `{_cell(_toml_value(o.default))}` | {o.type} | '
                       f"{_cell(_text(o.rule))} | {_cell(_text(o.help)).replace(chr(10), '<br>')} |")
        out.append("")
    return "\n".join(out)


def missing_help(options: Sequence[OptionDoc]) -> list[str]:
    """Options declared without help text."""
    return [o.name for o in options if not o.help.strip()]


# --- results pages ---------------------------------------------------------------------------------

SHOWN_FIGURES = ("accuracy_vs_round", "accuracy_vs_bytes")  # + accuracy_vs_time for a sweep with a target


def shown_figures(figures: Sequence[Path], target: bool) -> list[Path]:
    """The PNG figures a results page (or README section) shows, in the sweep's order."""
    shows = SHOWN_FIGURES + (("accuracy_vs_time",) if target else ())
    return [f for f in figures if f.suffix == ".png" and f.stem in shows]


def notes_of(file: str | Path, spec: dict[str, Any]) -> str:
    """What an experiment's results mean, in Markdown: the file's ``notes`` string, then ``NAME.md`` beside
    ``NAME.toml`` (either may be missing: "")."""
    parts = [spec.get("notes", "").strip()]
    beside = Path(file).with_suffix(".md")
    if beside.is_file():
        parts.append(beside.read_text().strip())
    return "\n\n".join(p for p in parts if p)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def sweep_command(file: str | Path, overrides: Sequence[str], docs_dir: Path) -> str:
    """``fedfit sweep experiments/NAME.toml [key=value ...] --docs``: the file relative to the project root
    (the docs folder's parent), ``--docs-dir`` where the docs folder is not ``docs``."""
    root = docs_dir.resolve().parent
    parts = ["fedfit sweep", _relative(Path(file), root), *overrides, "--docs"]
    if docs_dir.resolve() != (root / "docs"):
        parts += ["--docs-dir", _relative(docs_dir, root)]
    return " ".join(parts)


def results_page(name: str, description: str, command: str, runs: int, table: str, figures: Sequence[str],
                 notes: str, failed: Sequence[str] = (), experiment: str = "", source: str = "",
                 records: str = "") -> str:
    """One experiment's page (Markdown): title and description, the command that regenerates it (and
    ``records``: where its runs' results are recorded, ``fedfit.app.records``), what the
    results mean (``notes``; a placeholder saying how to write them when empty), the tables, the figures
    (paths relative to the page) and the experiment file itself."""
    out = [f"# {name}", "", description or f"The experiment `{source or name}`.", "",
           f"<!-- Written by `{command}`: edit the experiment file (its notes), not this page. -->", "",
           f"Regenerate with `{command}` ({runs} finished run{'s' if runs != 1 else ''}; add `--plot-only` to "
           "redo the tables and figures from finished runs)." + (
               f" The runs' results are recorded in `{records}`: the command re-makes this page from them and runs "
               "only what is not recorded." if records else ""), ""]
    if failed:
        out += [f"!!! warning \"{len(failed)} run{'s' if len(failed) != 1 else ''} failed\"",
                f"    {', '.join(f'`{f}`' for f in failed)}: run the sweep again to retry; the tables hold the "
                "finished runs only.", ""]
    out += ["## What it means", ""]
    if notes:
        out += [notes, ""]
    else:
        where = f"`{source}`" if source else "the experiment file"
        out += [f"*Not written yet.* Add `notes = \"\"\"...\"\"\"` (Markdown) to {where}, or a Markdown file of "
                "the same name beside it, and run the command above again.", ""]
    out += ["## Tables", "", table.strip(), ""]
    if figures:
        out += ["## Figures", ""]
        out += [f"![{_figure_title(f)}]({f})" for f in figures]
        out.append("")
    if experiment:
        out += ["## The experiment file", "", f'??? example "{source or name}"', "", "    ```toml"]
        out += [f"    {line}".rstrip() for line in experiment.rstrip().splitlines()]
        out += ["    ```", ""]
    return "\n".join(out)


def _figure_title(path: str) -> str:
    stem = Path(path).stem
    for shown in SHOWN_FIGURES + ("accuracy_vs_time",):
        if stem.endswith(shown):
            return shown.replace("_", " ")
    return stem.replace("_", " ")


def write_results_page(docs_dir: str | Path, file: str | Path, name: str, spec: dict[str, Any], table: str,
                       figures: Sequence[Path], runs: int, failed: Sequence[str] = (),
                       overrides: Sequence[str] = ()) -> Path:
    """Write ``DOCS/results/NAME.md`` and its figures (copied to ``DOCS/results/figures/NAME_*.png``), then
    the results index; return the page. Nothing outside ``DOCS/results`` is touched."""
    docs = Path(docs_dir)
    folder = docs / RESULTS
    fig_dir = folder / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    shown = []
    for f in shown_figures(figures, target=spec.get("target") is not None):
        shutil.copyfile(f, fig_dir / f"{name}_{f.name}")
        shown.append(f"figures/{name}_{f.name}")
    root = docs.resolve().parent
    page = folder / f"{name}.md"
    page.write_text(results_page(
        name, spec.get("description", ""), sweep_command(file, overrides, docs), runs, table, shown,
        notes_of(file, spec), failed, experiment=Path(file).read_text(), source=_relative(Path(file), root),
        records=_relative(records_dir(file, name), root) + "/"))
    write_results_index(docs)
    return page


def _page_summary(page: Path) -> tuple[str, str]:
    """A results page's title (its first ``# `` line) and description (the paragraph after it)."""
    lines = page.read_text().splitlines()
    title = next((ln[2:].strip() for ln in lines if ln.startswith("# ")), page.stem)
    start = next((i for i, ln in enumerate(lines) if ln.startswith("# ")), -1) + 1
    para = []
    for ln in lines[start:]:
        if ln.strip() and not ln.startswith("<!--"):
            para.append(ln.strip())
        elif para:
            break
    return title, " ".join(para)


def results_index(docs_dir: str | Path) -> str:
    """``docs/results/index.md``: every results page present, by name, with its description."""
    folder = Path(docs_dir) / RESULTS
    pages = sorted(p for p in folder.glob("*.md") if p.name != "index.md") if folder.is_dir() else []
    out = ["# Results", "",
           f"<!-- Generated by `fedfit sweep FILE --docs` and `{GENERATOR}`: do not edit. -->", "",
           "One page per experiment: the command that regenerates it, what the results mean, the tables and the "
           "figures. Each experiment is a file in `experiments/` ([Run an experiment](../how-to/experiments.md)); "
           "`fedfit sweep experiments/NAME.toml --docs` runs it (resuming finished runs) and writes its page here, "
           "without touching README.md. Seconds depend on the machine that ran the sweep.", ""]
    if pages:
        out += ["| experiment | what it shows |", "|---|---|"]
        out += [f"| [{title}]({p.name}) | {_cell(desc)} |" for p in pages for title, desc in [_page_summary(p)]]
    else:
        out.append("No results page yet: `fedfit sweep experiments/NAME.toml --docs` writes the first.")
    out.append("")
    return "\n".join(out)


def write_results_index(docs_dir: str | Path) -> Path:
    """(Re)write ``DOCS/results/index.md`` from the pages present."""
    path = Path(docs_dir) / RESULTS / "index.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results_index(docs_dir))
    return path


def write_generated(docs_dir: str | Path) -> list[Path]:
    """Every generated page that does not need runs: the options reference and the results index."""
    docs = Path(docs_dir)
    opts = docs / OPTIONS_PAGE
    opts.parent.mkdir(parents=True, exist_ok=True)
    opts.write_text(options_page(declared_options()))
    return [opts, write_results_index(docs)]
