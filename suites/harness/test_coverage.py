"""`fusebench list` (fusebench/coverage.py): every seed section appears; status and backends are measured."""

import json
import subprocess
import sys

from fusebench.coverage import MODULES, coverage_rows, uncovered_sections


def test_every_seed_section_is_covered_by_some_module():
    assert uncovered_sections() == []
    sections = [s for m in MODULES for s in m.sections]
    assert sorted(set(sections)) == list(range(1, 31))


def test_status_is_measured_not_declared():
    for row in coverage_rows():
        if row.status == "done":
            module_name, _, attribute = row.reference.partition(":")
            module = __import__(module_name, fromlist=[attribute])
            assert hasattr(module, attribute), row.reference
        else:
            assert row.status == "pending" and row.backends == []


def test_the_attention_family_is_done_with_its_backends():
    rows = {r.name: r for r in coverage_rows()}
    for name in ("scaled dot-product attention", "multi-head attention", "self-attention"):
        assert rows[name].status == "done"
        assert {"reference", "sdpa"} <= set(rows[name].backends)


def test_cli_list_json_and_table():
    out = subprocess.run([sys.executable, "-m", "fusebench.cli", "list", "--json"], capture_output=True,
                         text=True, check=True).stdout
    rows = json.loads(out)
    assert sorted({s for r in rows for s in r["sections"]}) == list(range(1, 31))
    assert {"sections", "reference", "oracle", "backends", "status"} <= set(rows[0])
    table = subprocess.run([sys.executable, "-m", "fusebench.cli", "list"], capture_output=True, text=True,
                           check=True).stdout
    assert "sections covered: 30 of 30" in table
