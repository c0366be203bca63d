"""report: plots and the HTML page are written from stored rows."""

import pandas as pd
import pytest

from fusebench import report
from fusebench.store import COLUMNS


def _rows():
    rows = []
    for provider, scale in (("reference", 1.0), ("sdpa-flash", 3.0)):
        for n in (128, 256, 512):
            for metric, unit, value in (("time", "ms", 1.0 / scale), ("tflops", "TFLOP/s", scale * n / 100),
                                        ("agreement", "error/allowed", 0.1), ("memory", "bytes", 2.0**20)):
                row = dict.fromkeys(COLUMNS)
                row.update(run_id="r1", timestamp="2026-01-01T00:00:00Z", suite="attention", case=f"bert-base-{n}",
                           size="cpu", shape="B1", axis_value=n, provider=provider, mode="forward", dtype="float32",
                           metric=metric, unit=unit, p20=value * 0.9, p50=value, p80=value * 1.1, agreement=0.1,
                           agrees=True, device="AMD EPYC", device_kind="cpu", commit="abc", note="")
                rows.append(row)
    interpreted = dict(rows[2], provider="triton", note="interpreted: TRITON_INTERPRET=1 ...")
    return pd.DataFrame(rows + [interpreted], columns=list(COLUMNS))


def test_report_writes_the_sweep_plot_and_an_html_page(tmp_path):
    written = report.write_report(_rows(), tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == ["attention-tflops-AMD_EPYC-float32-forward.png", "index.html"]
    png = (tmp_path / "out" / names[0]).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    page = (tmp_path / "out" / "index.html").read_text()
    assert names[0] in page and "bert-base-512" in page and "sdpa-flash" in page
    assert "interpreted" in page  # the triton row shows no time


def test_latest_keeps_only_the_newest_run_of_each_key():
    frame = _rows()
    older = frame.assign(timestamp="2025-01-01T00:00:00Z", run_id="r0", p50=99.0)
    kept = report.latest(pd.concat([older, frame]))
    assert (kept["run_id"] == "r1").all() and len(kept) == len(frame)


def test_the_report_shows_measured_time_over_the_roofline_bound_on_a_table_gpu(tmp_path):
    # bert-base-512 forward in bf16 on an H200: 6.44 GFLOP at 989.4 TFLOP/s = 6.51 us binds (25.4 MB at
    # 4.8 TB/s is 5.28 us), so 13.02 us measured is 2.0x the bound.
    measured_ms = 2 * (4 * 8 * 12 * 512 * 512 * 64) / 989.4e12 * 1e3
    row = dict.fromkeys(COLUMNS)
    row.update(run_id="r2", timestamp="2026-01-02T00:00:00Z", suite="attention", case="bert-base-512", size="gpu",
               shape="B8", axis_value=512, provider="sdpa-flash", mode="forward", dtype="bfloat16", metric="time",
               unit="ms", p20=measured_ms, p50=measured_ms, p80=measured_ms, agreement=0.1, agrees=True,
               device="NVIDIA H200", device_kind="cuda", commit="abc", note="")
    table = report._summary_table(pd.DataFrame([row], columns=list(COLUMNS)))
    assert table["x bound"].item() == pytest.approx(2.0)
    cpu = report._summary_table(_rows())
    assert cpu["x bound"].isna().all()  # CPU rows have no bound
    page = report.write_report(pd.concat([_rows(), pd.DataFrame([row], columns=list(COLUMNS))]), tmp_path)[-1]
    assert "x bound" in page.read_text()


def test_disagreeing_and_implausible_results_are_listed_first_and_never_plotted(tmp_path):
    rows = _rows()
    zeros = dict(rows.iloc[2], provider="zeros", agreement=9.09e3, agrees=False)  # its agreement row only
    fast = rows[rows["provider"] == "sdpa-flash"].assign(provider="physics", flags="implausible: faster than bound")
    frame = pd.concat([rows, pd.DataFrame([zeros]), fast], ignore_index=True)
    listed = report.not_ranked(frame)
    assert sorted(set(listed["provider"])) == ["physics", "zeros"]
    text = report.format_not_ranked(frame)
    assert "NOT RANKED" in text and "zeros" in text and "DISAGREES" in text and "IMPLAUSIBLE" in text
    written = report.write_report(frame, tmp_path)
    page = written[-1].read_text()
    head, table = page.split("Latest result of each case")
    assert "Not ranked" in head and "zeros" in head and "physics" in head
    assert "zeros" not in table and "physics" not in table
