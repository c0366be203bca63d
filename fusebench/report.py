"""`fusebench report`: plots and a one-page HTML summary from the results store.

* ``attention-tflops-<device>-<dtype>-<mode>.png``: TFLOP/s against sequence length, one line per
  provider, one panel per case family that has several lengths (the ``bert-base`` sweep);
* ``graph-gbps-<device>-<dtype>-<mode>.png``: GB/s against average degree, one line per provider,
  one panel per graph family that has several degrees (the ``er-degree`` sweep);
* ``index.html``: first, loudly, every result that is not ranked (it disagrees with the gold, or its
  figure is implausible); then the devices and commits measured, the latest result of every (case,
  provider, mode) that agreed, with its agreement ratio and, on a GPU of the spec-sheet table, its time
  over the analytic lower bound (:mod:`fusebench.roofline`), and the plots.

A disagreeing result has no figure in the store; an implausible one has, and is left out of the plots
and the table all the same.

Points are medians (p50) with p20-p80 bars, from each (device, case, provider, mode, dtype)'s most
recent run. matplotlib draws with the Agg backend (no display needed).
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

from fusebench.device import slug

__all__ = ["write_report", "latest", "not_ranked", "format_not_ranked"]

_KEY = ["device", "suite", "case", "size", "provider", "mode", "dtype"]
_PLOTS = (  # (suite, metric, x label, file prefix)
    ("attention", "tflops", "sequence length (keys)", "attention-tflops"),
    ("graph", "gbps", "average degree", "graph-gbps"),
)


def not_ranked(frame: pd.DataFrame) -> pd.DataFrame:
    """The latest results that are never ranked: disagreeing with the gold, or implausibly fast."""
    from fusebench.compare import excluded

    return excluded(latest(frame[frame["suite"].isin(["attention", "graph", "models"])]))


def format_not_ranked(frame: pd.DataFrame) -> str:
    from fusebench.compare import format_excluded

    return format_excluded(not_ranked(frame))


def _ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` without the results :func:`not_ranked` lists (every metric of those results)."""
    bad = not_ranked(rows)
    if bad.empty:
        return rows
    keys = ["device", "run_id", "case", "provider", "mode", "dtype"]
    marked = set(map(tuple, bad[keys].to_numpy().tolist()))
    return rows[[tuple(r) not in marked for r in rows[keys].to_numpy().tolist()]]


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """Only the rows of each (device, case, provider, mode, dtype)'s most recent run."""
    if frame.empty:
        return frame
    newest = frame.groupby(_KEY)["timestamp"].transform("max")
    return frame[frame["timestamp"] == newest]


def _plot(rows: pd.DataFrame, metric: str, unit: str, xlabel: str, title: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows.assign(family=rows["case"].str.replace(r"-\d+$", "", regex=True))
    families = [f for f, g in rows.groupby("family") if g["axis_value"].nunique() >= 2]
    if not families:
        return False
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.2), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        for provider, points in rows[rows["family"] == family].groupby("provider"):
            points = points.sort_values("axis_value")
            ax.errorbar(points["axis_value"], points["p50"],
                        yerr=[points["p50"] - points["p20"], points["p80"] - points["p50"]], marker="o", capsize=3,
                        label=provider)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} ({unit}), p50 with p20-p80")
        ax.set_title(family)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (device, case, provider, mode, dtype): time, throughput, memory, agreement."""
    def value(metric, column="p50"):
        part = rows[rows["metric"] == metric].set_index(_KEY)[column]
        return part[~part.index.duplicated(keep="last")]

    base = rows.drop_duplicates(_KEY).set_index(_KEY)[["shape", "agreement", "agrees", "note"]]
    table = base.join(value("time").rename("p50 ms"))
    table = table.join(value("time", "p20").rename("p20 ms")).join(value("time", "p80").rename("p80 ms"))
    for metric, label in (("tflops", "TFLOP/s"), ("gbps", "GB/s"), ("peak_share", "% peak"), ("memory", "MB")):
        table = table.join(value(metric).rename(label))
    table["MB"] = table["MB"] / 2**20
    table["x bound"] = [over_bound(key, ms) for key, ms in zip(table.index, table["p50 ms"], strict=True)]
    interpreted = table["p50 ms"].isna() & table["note"].str.startswith("interpreted", na=False)
    table["p50 ms"] = table["p50 ms"].astype(object).where(~interpreted, "interpreted")
    return table.reset_index().sort_values(["device", "suite", "case", "mode", "provider"])


def over_bound(key: tuple, measured_ms) -> float:
    """Measured p50 time over the roofline bound (>= 1; 1 is the hardware's limit), NaN where none applies.

    A bound exists for the real (GPU) size of a catalog case on a device of the spec-sheet table
    (:data:`fusebench.metrics.PEAKS`), matched by its name; CPU rows and unknown GPUs get none.
    """
    from fusebench import cases as catalog
    from fusebench import roofline
    from fusebench.metrics import spec_peak

    device, _, case, size, _, mode, dtype = key
    peak = spec_peak(str(device))
    if peak is None or size != "gpu" or case not in catalog.CATALOG or not isinstance(measured_ms, float):
        return float("nan")
    try:
        limit = roofline.bound(catalog.get(case), mode, str(dtype), peak)
    except ValueError:  # a dtype or mode the model does not know
        return float("nan")
    return measured_ms / limit.ms


def write_report(frame: pd.DataFrame, out_dir) -> list[Path]:
    """Write the plots and index.html into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    everything = latest(frame[frame["suite"].isin(["attention", "graph"])])
    rows = _ranked(everything)
    written: list[Path] = []
    for suite, metric, xlabel, prefix in _PLOTS:
        chosen = rows[(rows["suite"] == suite) & (rows["metric"] == metric)]
        for (device, dtype, mode), group in chosen.groupby(["device", "dtype", "mode"]):
            path = out / f"{prefix}-{slug(device)}-{dtype}-{mode.replace('+', '-')}.png"
            unit = group["unit"].iloc[0]
            if _plot(group, metric, unit, xlabel, f"{suite}: {unit} on {device}, {dtype}, {mode}", path):
                written.append(path)
    index = out / "index.html"
    index.write_text(_html(frame, rows, [p.name for p in written], not_ranked(everything)))
    written.append(index)
    return written


def _html(frame: pd.DataFrame, rows: pd.DataFrame, images: list[str], bad: pd.DataFrame) -> str:
    identity_columns = ["device", "device_kind", "compute_capability", "driver", "cuda", "torch", "triton",
                        "harness", "commit", "dirty", "host"]
    machines = frame.sort_values("timestamp").drop_duplicates(identity_columns)[identity_columns + ["timestamp"]]
    summary = _summary_table(rows)
    notes = sorted(set(rows.loc[rows["metric"] == "memory", "note"].dropna()))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fusebench report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>",
        "<h1>fusebench report</h1>",
        *(["<h2 style='color:#b00'>Not ranked: disagreeing or implausible results</h2>",
           f"<p style='color:#b00'><strong>{len(bad)} result(s)</strong> disagree with the gold (no figure was "
           "stored for them) or have a figure faster than physics allows. They appear in no plot, table or "
           "speedup below.</p>", bad.to_html(index=False)] if len(bad) else []),
        f"<p>Generated {html.escape(time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime()))} from "
        f"{frame['run_id'].nunique()} run(s), {len(frame)} stored row(s).</p>",
        "<h2>Devices and commits measured</h2>", machines.to_html(index=False),
        "<h2>Plots</h2>",
        *(f"<p><img src='{html.escape(name)}' alt='{html.escape(name)}'></p>" for name in images),
        "" if images else "<p>No sweep with two or more points yet.</p>",
        "<h2>Latest result of each case, provider and mode</h2>",
        "<p>agreement: the error against the float64 gold over the allowed error (&le; 1 agrees); every time has "
        "one. A Triton kernel run under TRITON_INTERPRET=1 shows <em>interpreted</em>: an interpreter time is not "
        "a kernel time and is not reported. x bound: the p50 time over the analytic lower bound "
        "max(FLOPs / peak, bytes / bandwidth) of the device's spec sheet (`fusebench roofline`; 1 is the hardware's "
        "limit), shown for real-size cases on GPUs of the table. "
        "Memory: " + html.escape("; ".join(notes) or "n/a") + ".</p>",
        summary.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""),
        "</body></html>",
    ]
    return "\n".join(parts)
