"""compare: speedup tables from synthetic stored rows, flagged only on sound evidence, never ranking the wrong."""

import pandas as pd
import pytest

from fusebench import compare
from fusebench.store import COLUMNS


def _row(run, provider, case, p50, *, repeats=None, device="NVIDIA H200", commit="aaaa1111", timestamp="2026-01-01",
         agreement=0.5, agrees=True, flags="", torch="2.13.0", threads=1, metric="time"):
    row = dict.fromkeys(COLUMNS)
    rounds = repeats if repeats is not None else (p50,)
    row.update(run_id=run, timestamp=timestamp, suite="attention", case=case, size="gpu", shape="B1",
               provider=provider, mode="forward", dtype="bfloat16", metric=metric, unit="ms", p20=min(rounds),
               p50=p50, p80=max(rounds), agreement=agreement, agrees=agrees, device=device, commit=commit,
               flags=flags, torch=torch, threads=threads, host="h", dirty=False,
               repeats=";".join(map(repr, rounds)) if repeats is not None else "")
    return row


def _frame(rows):
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _rounds(center, spread=0.01):
    return (center * (1 - spread), center, center * (1 + spread))


def test_a_clear_speedup_with_three_rounds_a_side_is_flagged():
    frame = _frame([_row("r1", "reference", "c", 10.0, repeats=_rounds(10.0)),
                    _row("r1", "triton", "c", 2.0, repeats=_rounds(2.0))])
    table = compare.providers(frame, "reference", "triton")
    assert table["speedup"].iloc[0] == pytest.approx(5.0)
    assert table["ci_low"].iloc[0] > 1 and table["n_a"].iloc[0] == 3
    assert bool(table["changed"].iloc[0]) is True


def test_one_sample_a_side_is_never_flagged_however_large_the_ratio():
    # The old rule read a one-sample GPU case's zero spread as "no noise" and starred everything.
    frame = _frame([_row("r1", "reference", "c", 10.0), _row("r1", "triton", "c", 2.0)])
    table = compare.providers(frame, "reference", "triton")
    assert table["n_a"].iloc[0] == 1 and bool(table["changed"].iloc[0]) is False


def test_overlapping_rounds_are_not_flagged():
    frame = _frame([_row("r1", "reference", "c", 10.0, repeats=(9.0, 10.0, 12.0)),
                    _row("r1", "triton", "c", 9.5, repeats=(8.0, 9.5, 11.0))])
    table = compare.providers(frame, "reference", "triton")
    assert table["ci_low"].iloc[0] < 1 < table["ci_high"].iloc[0]
    assert bool(table["changed"].iloc[0]) is False


def test_a_change_below_the_minimum_effect_is_not_flagged_even_when_certain():
    frame = _frame([_row("r1", "reference", "c", 10.3, repeats=_rounds(10.3, 0.001)),
                    _row("r1", "triton", "c", 10.0, repeats=_rounds(10.0, 0.001))])
    table = compare.providers(frame, "reference", "triton")
    assert table["ci_low"].iloc[0] > 1  # certain, but 3%
    assert bool(table["changed"].iloc[0]) is False
    assert bool(compare.providers(frame, "reference", "triton", min_effect=0.02)["changed"].iloc[0]) is True


def test_three_stored_runs_count_as_three_observations():
    rows = [_row(f"r{i}", "triton", "c", t, commit="aaaa1111", timestamp=f"2026-01-0{i}")
            for i, t in enumerate((4.0, 4.1, 3.9), start=1)]
    rows += [_row(f"s{i}", "triton", "c", t, commit="bbbb2222", timestamp=f"2026-01-1{i}")
             for i, t in enumerate((2.0, 2.05, 1.95), start=1)]
    table = compare.commits(_frame(rows), "aaaa", "bbbb", device="H200")
    assert (table["n_a"].iloc[0], table["n_b"].iloc[0]) == (3, 3)
    assert table["speedup"].iloc[0] == pytest.approx(2.0) and bool(table["changed"].iloc[0])
    assert "aaaa1111" in table.attrs["title"] and "NVIDIA H200" in table.attrs["title"]


def test_rows_of_different_environments_are_never_pooled():
    rows = [_row("old", "triton", "c", 100.0, repeats=_rounds(100.0), torch="2.12.0", timestamp="2026-01-01"),
            _row("new", "triton", "c", 2.0, repeats=_rounds(2.0), torch="2.13.0", timestamp="2026-01-02"),
            _row("ref", "reference", "c", 4.0, repeats=_rounds(4.0), torch="2.13.0", timestamp="2026-01-02")]
    table = compare.providers(_frame(rows), "reference", "triton")
    # only the newest environment's rounds: 2.0, not a median pooled with torch 2.12's 100 ms
    assert table["ms_b"].iloc[0] == pytest.approx(2.0) and table["n_b"].iloc[0] == 3
    by_thread = [_row("a", "triton", "c", 4.0, repeats=_rounds(4.0), threads=1, timestamp="2026-01-01"),
                 _row("b", "triton", "c", 2.0, repeats=_rounds(2.0), threads=8, timestamp="2026-01-02")]
    table = compare.runs(_frame(by_thread), "a", "b")
    assert table["env"].iloc[0] == "threads 1 -> 8"  # said, not hidden
    assert "env" in compare.format_table(table)


def test_disagreeing_and_implausible_results_are_not_ranked_but_listed():
    frame = _frame([
        _row("r1", "reference", "c", 10.0, repeats=_rounds(10.0)),
        _row("r1", "zeros", "c", 0.3, agreement=9.09e3, agrees=False, metric="agreement"),
        _row("r1", "zeros", "c", 0.3, repeats=_rounds(0.3), agrees=False),  # even a time row, if one were stored
        _row("r1", "physics", "c", 1e-6, repeats=_rounds(1e-6), flags="implausible: faster than the bound"),
        _row("r1", "triton", "c", 2.0, repeats=_rounds(2.0)),
    ])
    tables = compare.against_reference(frame)
    ranked = {t.attrs["title"].split()[4] for t in tables if len(t)}
    assert ranked == {"triton"}
    listed = compare.excluded(frame)
    assert set(listed["provider"]) == {"zeros", "physics"}
    text = compare.format_excluded(listed)
    assert "NOT RANKED" in text and "DISAGREES (ratio 9.09e+03)" in text and "IMPLAUSIBLE" in text


def test_fast_p_counts_only_correct_and_faster_cases():
    rows = []
    for case, (ref, tri, ok) in {"a": (10.0, 2.0, True), "b": (10.0, 12.0, True), "c": (10.0, 1.0, False)}.items():
        rows += [_row("r1", "reference", case, ref, metric="agreement"), _row("r1", "reference", case, ref),
                 _row("r1", "triton", case, tri, metric="agreement", agrees=ok)]
        if ok:
            rows.append(_row("r1", "triton", case, tri))
    table = compare.fast_p(_frame(rows), p=1.0).set_index("provider")
    assert table.loc["triton", "cases"] == 3 and table.loc["triton", "correct"] == 2
    assert table.loc["triton", "fast_1"] == pytest.approx(1 / 3)  # only a: b is slower, c is wrong
    assert compare.fast_p(_frame(rows), p=6.0).set_index("provider").loc["triton", "fast_6"] == 0


def test_commits_and_devices_compare_the_right_sides():
    frame = _frame([
        _row("r1", "triton", "c", 4.0, commit="aaaa1111", timestamp="2026-01-01"),
        _row("r2", "triton", "c", 2.0, commit="bbbb2222", timestamp="2026-01-02"),
        _row("r3", "triton", "c", 3.0, device="NVIDIA A100-SXM4-80GB", commit="bbbb2222", timestamp="2026-01-03"),
    ])
    assert compare.commits(frame, "aaaa", "bbbb", device="H200")["speedup"].iloc[0] == pytest.approx(2.0)
    assert compare.devices(frame, "A100", "H200")["speedup"].iloc[0] == pytest.approx(1.5)


def test_unknown_or_ambiguous_names_are_refused_with_the_known_ones():
    frame = _frame([_row("r1", "triton", "c", 1.0), _row("r2", "triton", "c", 1.0, device="NVIDIA H100 80GB HBM3")])
    with pytest.raises(ValueError, match="matches several"):
        compare.devices(frame, "NVIDIA", "H200")
    with pytest.raises(ValueError, match="commit 'ffff' matches none"):
        compare.commits(frame, "ffff", "aaaa")
    with pytest.raises(ValueError, match="min_effect must be >= 0"):
        compare.providers(frame, "triton", "triton", min_effect=-1)


def test_a_case_whose_shape_changed_between_commits_is_not_compared():
    frame = _frame([_row("r1", "triton", "c", 4.0, commit="aaaa1111"),
                    _row("r2", "triton", "c", 1.0, commit="bbbb2222"),
                    _row("r2", "triton", "d", 1.0, commit="bbbb2222")])
    frame.loc[1, "shape"] = "B2"  # case c was made twice as large in commit bbbb
    assert compare.commits(frame, "aaaa", "bbbb").empty


def test_a_change_timed_on_an_oversubscribed_machine_is_shown_with_a_question_mark():
    frame = _frame([_row("r1", "reference", "c", 10.0, repeats=_rounds(10.0), flags="oversubscribed"),
                    _row("r1", "triton", "c", 2.0, repeats=_rounds(2.0))])
    table = compare.providers(frame, "reference", "triton")
    assert bool(table["changed"].iloc[0]) and bool(table["oversubscribed"].iloc[0])
    text = compare.format_table(table)
    assert "5.00 ?" in text and "5.00 *" not in text and "oversubscribed" in text
