"""Speedup tables from the results store: provider A vs B, GPU X vs Y, commit A vs B.

Each table has one row per workload (suite, case, size, mode, dtype, and the provider when it is not
the axis compared) with both sides' median time, the speedup ``A / B`` (> 1: B is faster), and
whether the change is larger than the measured spread:

* **spread** of one side: when two or more runs of it are stored, the run-to-run spread of their
  medians, ``(max - min) / median``; with one run, the spread of its samples, ``(p80 - p20) / p50``.
* a speedup is **changed** when it lies outside ``[1 / (1 + s), 1 + s]`` with ``s`` the sum of both
  sides' spreads: noise of that size could not produce it.

Every row also carries both sides' worst agreement ratio, so a speedup never hides a wrong result.
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["providers", "devices", "commits", "against_reference", "speedup_table", "format_table", "LEGEND"]

# The workload key. shape is part of it: a case edited between commits is not the same workload.
KEYS = ["suite", "case", "size", "shape", "mode", "dtype"]
LEGEND = ("speedup = A's median time / B's (> 1: B is faster); spread = both sides' relative run-to-run spread "
          "(between stored runs when there are two or more, else p20-p80 within the one run); "
          "* = a change larger than that spread; agree = worst agreement ratio (<= 1 agrees).")


def _times(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["metric"] == "time"]


def _filter(frame: pd.DataFrame, suite=None, mode=None, dtype=None) -> pd.DataFrame:
    for column, value in (("suite", suite), ("mode", mode), ("dtype", dtype)):
        if value is not None:
            frame = frame[frame[column] == value]
    return frame


def _resolve(frame: pd.DataFrame, column: str, wanted: str, *, prefix: bool) -> str:
    """The one stored value of ``column`` that ``wanted`` names (exactly, or as a unique prefix/substring)."""
    known = sorted(frame[column].dropna().unique())
    if wanted in known:
        return wanted
    match = [k for k in known if (k.startswith(wanted) if prefix else wanted.lower() in k.lower())]
    if len(match) == 1:
        return match[0]
    what = "matches several" if match else "matches none"
    raise ValueError(f"{column} {wanted!r} {what} of the stored values: {', '.join(match or known) or '(none)'}")


def _latest(frame: pd.DataFrame, column: str) -> str:
    if frame.empty:
        raise ValueError("no timed results match these filters")
    return frame.sort_values("timestamp")[column].iloc[-1]


def _side(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per workload: median time over runs, its spread and where the spread came from, worst agreement."""
    def summarize(group: pd.DataFrame) -> pd.Series:
        runs = group["run_id"].nunique()
        median = float(group["p50"].median())
        if runs >= 2:
            spread, source = (group["p50"].max() - group["p50"].min()) / median, f"{runs} runs"
        else:
            row = group.iloc[0]
            spread, source = (row["p80"] - row["p20"]) / row["p50"], "samples"
        return pd.Series({"ms": median, "spread": float(spread), "from": source,
                          "agree": float(group["agreement"].max())})

    return frame.groupby(keys, sort=False).apply(summarize, include_groups=False)


def speedup_table(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], title: str) -> pd.DataFrame:
    """Join two sides' time rows on ``keys``: times, speedup A/B, combined spread, changed flag."""
    left, right = _side(_times(a), keys), _side(_times(b), keys)
    table = left.add_suffix("_a").join(right.add_suffix("_b"), how="inner").reset_index()
    table["speedup"] = table["ms_a"] / table["ms_b"]
    table["spread"] = table["spread_a"] + table["spread_b"]
    table["changed"] = [abs(math.log(s)) > math.log1p(sp) for s, sp in zip(table["speedup"], table["spread"],
                                                                               strict=True)]
    columns = keys + ["ms_a", "ms_b", "speedup", "spread", "changed", "from_a", "from_b", "agree_a", "agree_b"]
    table = table[columns]
    table.attrs["title"] = title
    return table


def providers(frame: pd.DataFrame, a: str, b: str, *, device=None, commit=None, **filters) -> pd.DataFrame:
    """Provider ``a`` vs provider ``b`` on one device and commit (default: the most recent measured)."""
    rows = _filter(_times(frame), **filters)
    rows = rows[rows["provider"].isin([a, b])]
    device = _resolve(rows, "device", device, prefix=False) if device else _latest(rows, "device")
    rows = rows[rows["device"] == device]
    commit = _resolve(rows, "commit", commit, prefix=True) if commit else _latest(rows, "commit")
    rows = rows[rows["commit"] == commit]
    return speedup_table(rows[rows["provider"] == a], rows[rows["provider"] == b], KEYS,
                         f"provider {a} (A) vs {b} (B) on {device}, commit {commit[:12]}")


def devices(frame: pd.DataFrame, x: str, y: str, *, provider=None, commit=None, **filters) -> pd.DataFrame:
    """Device ``x`` vs device ``y`` (names as stored, or a unique part of one); each side's latest commit
    unless ``commit`` fixes one. Cases run at their size for each device, so only equal sizes are joined."""
    rows = _filter(_times(frame), **filters)
    if provider:
        rows = rows[rows["provider"] == provider]
    sides, commits_used = [], []
    for wanted in (x, y):
        side = rows[rows["device"] == _resolve(rows, "device", wanted, prefix=False)]
        used = _resolve(side, "commit", commit, prefix=True) if commit else _latest(side, "commit")
        sides.append(side[side["commit"] == used])
        commits_used.append(used[:12])
    return speedup_table(*sides, KEYS + ["provider"],
                         f"device {x} (A, commit {commits_used[0]}) vs {y} (B, commit {commits_used[1]})")


def commits(frame: pd.DataFrame, a: str, b: str, *, device=None, provider=None, **filters) -> pd.DataFrame:
    """Commit ``a`` vs commit ``b`` (hashes or unique prefixes) on one device (default: the latest)."""
    rows = _filter(_times(frame), **filters)
    if provider:
        rows = rows[rows["provider"] == provider]
    device = _resolve(rows, "device", device, prefix=False) if device else _latest(rows, "device")
    rows = rows[rows["device"] == device]
    first, second = (_resolve(rows, "commit", c, prefix=True) for c in (a, b))
    return speedup_table(rows[rows["commit"] == first], rows[rows["commit"] == second], KEYS + ["provider"],
                         f"commit {first[:12]} (A) vs {second[:12]} (B) on {device}")


def against_reference(frame: pd.DataFrame, *, device=None, commit=None, **filters) -> list[pd.DataFrame]:
    """The default `fusebench compare`: the reference against each other provider measured with it."""
    rows = _filter(_times(frame), **filters)
    device = _resolve(rows, "device", device, prefix=False) if device else _latest(rows, "device")
    rows = rows[rows["device"] == device]
    commit = _resolve(rows, "commit", commit, prefix=True) if commit else _latest(rows, "commit")
    others = [p for p in rows[rows["commit"] == commit]["provider"].unique() if p != "reference"]
    return [providers(frame, "reference", p, device=device, commit=commit, **filters) for p in others]


def format_table(table: pd.DataFrame) -> str:
    shown = table.copy()
    shown["speedup"] = [f"{s:.2f}{' *' if c else ''}" for s, c in zip(shown["speedup"], shown["changed"],
                                                                      strict=True)]
    shown = shown.drop(columns=["changed"])
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.3g}") if len(shown) else "(no common rows)"
    return f"{table.attrs.get('title', '')}\n{text}"
