"""fusebench/tables.py: the CLI's text tables, with tabulate and without it (a bare GPU device)."""

import sys

from fusebench.tables import text_table


def test_text_is_left_aligned_numbers_right_under_a_dashed_rule():
    lines = text_table([("a", 1.5), ("longer text", 12.25)], ["name", "ms"]).splitlines()
    assert lines[0].split() == ["name", "ms"] and set(lines[1]) == {"-", " "}
    assert lines[2].startswith("a ") and lines[3].startswith("longer text")
    assert lines[2].rstrip().endswith(" 1.5") and lines[3].endswith("12.25")
    assert lines[2].index(".") == lines[3].index(".")  # numbers line up on the decimal point


def test_cells_kept_as_written_and_an_empty_table_says_so():
    table = text_table([("1,2", "007")], ["sections", "id"], numbers=False)
    assert "1,2" in table and "007" in table
    assert text_table([], ["x"], empty="(no module)") == "(no module)"


def test_without_tabulate_pandas_lays_the_table_out(monkeypatch):
    monkeypatch.setitem(sys.modules, "tabulate", None)  # import tabulate now raises ImportError
    lines = text_table([("a", 1), ("bb", 22)], ["name", "n"]).splitlines()
    assert lines[0].split() == ["name", "n"] and lines[1].split() == ["a", "1"] and lines[2].split() == ["bb", "22"]
