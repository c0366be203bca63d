"""report: plots and the HTML page are written from stored rows."""

import pandas as pd

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
                           size="cpu", shape="B1", x=n, provider=provider, mode="forward", dtype="float32",
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
