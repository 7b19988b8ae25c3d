"""The hostile-input table of docs/reliability.md, from the tally tests/test_fuzz.py writes:

    FEDFIT_FUZZ_REPORT=fuzz.json .venv/bin/python -m pytest -q tests/test_fuzz.py     # fast profile
    FEDFIT_FUZZ=long FEDFIT_FUZZ_REPORT=fuzz.json .venv/bin/python -m pytest -q tests/test_fuzz.py
    .venv/bin/python experiments/fuzz_table.py fuzz.json

One row per target: cases run, accepted, and the refusals by reason (the reason's wording with numbers,
paths and quoted values left out), most frequent first. Every case either worked or was refused with its
own error: a case that raised anything else would have failed its test.
"""
import json
import sys


def table(report: dict, top: int = 4) -> str:
    rows = ["| input | cases | accepted | refused, by reason (cases) |", "|---|---:|---:|---|"]
    for target, outcomes in sorted(report["targets"].items()):
        total = sum(outcomes.values())
        refused = sorted(((n, why) for why, n in outcomes.items() if why != "accepted"), reverse=True)
        shown = "; ".join(f"{why.split(': ', 1)[1]} ({n})" for n, why in refused[:top])
        more = sum(n for n, _ in refused[top:])
        if more:
            others = len(refused) - top
            shown += f"; {others} other reason{'s' if others > 1 else ''} ({more})"
        rows.append(f"| {target} | {total:,} | {outcomes.get('accepted', 0):,} | {shown.replace('|', '/')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print(table(json.load(f)))
