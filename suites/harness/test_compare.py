"""compare: speedup tables from synthetic stored rows, flagged against the measured spread."""

import pandas as pd
import pytest

from fusebench import compare
from fusebench.store import COLUMNS


def _row(run, provider, case, p50, *, spread=0.02, device="NVIDIA H200", commit="aaaa1111", timestamp="2026-01-01",
         agreement=0.5):
    row = dict.fromkeys(COLUMNS)
    row.update(run_id=run, timestamp=timestamp, suite="attention", case=case, size="gpu", shape="B1", provider=provider,
               mode="forward", dtype="bfloat16", metric="time", unit="ms", p20=p50 * (1 - spread / 2), p50=p50,
               p80=p50 * (1 + spread / 2), agreement=agreement, device=device, commit=commit)
    return row


def _frame(rows):
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_provider_speedup_is_flagged_only_beyond_the_spread():
    frame = _frame([
        _row("r1", "reference", "big", 10.0), _row("r1", "triton", "big", 2.0),  # 5x: far beyond 4% spread
        _row("r1", "reference", "noisy", 10.0, spread=0.5), _row("r1", "triton", "noisy", 8.0, spread=0.5),
    ])
    table = compare.providers(frame, "reference", "triton").set_index("case")
    assert table.loc["big", "speedup"] == pytest.approx(5.0)
    assert bool(table.loc["big", "changed"]) is True
    assert table.loc["noisy", "speedup"] == pytest.approx(1.25)
    assert table.loc["noisy", "spread"] == pytest.approx(1.0)
    assert bool(table.loc["noisy", "changed"]) is False  # 1.25x is inside a 100% combined spread
    assert table.loc["big", "from_a"] == "samples"


def test_run_to_run_spread_is_used_when_several_runs_exist():
    frame = _frame([
        _row("r1", "reference", "c", 10.0), _row("r2", "reference", "c", 12.0),
        _row("r1", "triton", "c", 9.0), _row("r2", "triton", "c", 9.0),
    ])
    table = compare.providers(frame, "reference", "triton")
    assert table["from_a"].iloc[0] == "2 runs"
    assert table["ms_a"].iloc[0] == pytest.approx(11.0)
    assert table["spread"].iloc[0] == pytest.approx(2 / 11)  # (12 - 10) / 11 + 0 for the steady side
    assert table["changed"].iloc[0]  # 11 / 9 = 1.22 lies beyond 1 + 2/11 = 1.18


def test_commits_and_devices_compare_the_right_sides():
    frame = _frame([
        _row("r1", "triton", "c", 4.0, commit="aaaa1111", timestamp="2026-01-01"),
        _row("r2", "triton", "c", 2.0, commit="bbbb2222", timestamp="2026-01-02"),
        _row("r3", "triton", "c", 3.0, device="NVIDIA A100-SXM4-80GB", commit="bbbb2222", timestamp="2026-01-03"),
    ])
    by_commit = compare.commits(frame, "aaaa", "bbbb", device="H200")
    assert by_commit["speedup"].iloc[0] == pytest.approx(2.0) and by_commit["changed"].iloc[0]
    assert "aaaa1111" in by_commit.attrs["title"] and "NVIDIA H200" in by_commit.attrs["title"]
    by_device = compare.devices(frame, "A100", "H200")
    assert by_device["speedup"].iloc[0] == pytest.approx(1.5)  # H200's latest commit (2.0) vs A100's 3.0


def test_unknown_or_ambiguous_names_are_refused_with_the_known_ones():
    frame = _frame([_row("r1", "triton", "c", 1.0), _row("r2", "triton", "c", 1.0, device="NVIDIA H100 80GB HBM3")])
    with pytest.raises(ValueError, match="matches several"):
        compare.devices(frame, "NVIDIA", "H200")
    with pytest.raises(ValueError, match="commit 'ffff' matches none"):
        compare.commits(frame, "ffff", "aaaa")


def test_default_comparison_is_reference_against_each_provider_and_formats():
    frame = _frame([_row("r1", p, "c", t) for p, t in (("reference", 4.0), ("sdpa-flash", 1.0), ("triton", 2.0))])
    tables = compare.against_reference(frame)
    # titles read "provider reference (A) vs X (B) ..."
    assert sorted(t.attrs["title"].split()[4] for t in tables) == ["sdpa-flash", "triton"]
    text = compare.format_table(tables[0])
    assert "4.00 *" in text or "2.00 *" in text


def test_a_case_whose_shape_changed_between_commits_is_not_compared():
    frame = _frame([_row("r1", "triton", "c", 4.0, commit="aaaa1111"),
                    _row("r2", "triton", "c", 1.0, commit="bbbb2222"),
                    _row("r2", "triton", "d", 1.0, commit="bbbb2222")])
    frame.loc[1, "shape"] = "B2"  # case c was made twice as large in commit bbbb
    assert compare.commits(frame, "aaaa", "bbbb").empty
