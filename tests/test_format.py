"""fedfit.format: the shared byte / percent / Markdown helpers, pinned to the strings tables show."""
from fedfit.format import human_bytes, markdown_table, pct


def test_human_bytes_decimal_units():
    assert [human_bytes(n) for n in (0, 999, 1000, 1500, 123456, 2e9, 1.5e12, -2500)] == [
        "0 B", "999 B", "1 KB", "1.5 KB", "123 KB", "2 GB", "1.5 TB", "-2.5 KB"]


def test_pct_one_decimal_and_missing():
    assert (pct(0.1234), pct(1.0), pct(0.0), pct(None), pct(None, "n/a")) == ("12.3", "100.0", "0.0", "", "n/a")


def test_markdown_table_alignment_and_blank_cells():
    table = markdown_table(["a", "b", "c"], [["1", "", None], ["x|y", "2", "3"]], "lr")
    assert table.splitlines() == ["| a | b | c |", "|---|---:|---|", "| 1 |  | |", "| x|y | 2 | 3 |"]
    assert markdown_table(["a"], []) == "| a |\n|---|"
