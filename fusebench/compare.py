"""Speedup tables from the results store: provider A vs B, GPU X vs Y, commit A vs B, run A vs B.

Each table has one row per workload (suite, case, size, mode, dtype, and the provider when it is not
the axis compared) with both sides' median time, the speedup ``A / B`` (> 1: B is faster), a bootstrap
confidence interval of that ratio, and whether the change is **flagged**. A change is flagged only when

* each side has at least :data:`MIN_OBSERVATIONS` independent observations: stored runs, or the
  interleaved repetitions one run holds (``fusebench run`` times each case's providers in rounds);
* the 95% bootstrap interval of the ratio of the two sides' medians excludes 1; and
* the effect exceeds a minimum (``min_effect``, default 5%): a real but negligible change is not news.

A change that meets these on a side timed while the machine was oversubscribed is shown ``?``, not ``*``:
the time then includes waiting for a core, which shifts with the others' load between runs and rounds, so
the interval is not one of independent noise (``oversubscribed`` in the table).

What is compared is only what can be trusted:

* a result that **disagrees** with the gold has no time (the runner stores none), and a figure marked
  **implausible** (faster than the roofline allows) is left out; :func:`excluded` lists both, loudly;
* rows measured under different conditions are **never pooled**: per workload and side, only the rows of
  the most recent environment (host, torch, triton, CUDA, driver, thread count, dirty tree) are used; the
  ``env`` column says what differs between the two sides, beyond the axis compared.

:func:`fast_p` is KernelBench's fast_p per provider and device: the share of the cases a provider ran
whose result is correct **and** faster than the baseline by more than a factor ``p``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["providers", "devices", "commits", "runs", "against_reference", "speedup_table", "format_table",
           "excluded", "format_excluded", "fast_p", "format_fast_p", "LEGEND", "MIN_EFFECT", "MIN_OBSERVATIONS"]

# The workload key. shape is part of it: a case edited between commits is not the same workload.
KEYS = ["suite", "case", "size", "shape", "mode", "dtype"]
# What a measurement depends on besides the code and the device: rows differing in these are not pooled.
ENVIRONMENT = ["host", "torch", "triton", "cuda", "driver", "threads", "dirty"]
MIN_OBSERVATIONS = 3
MIN_EFFECT = 0.05
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
LEGEND = ("speedup = A's median time / B's (> 1: B is faster); ci = its 95% bootstrap interval; n = independent "
          "observations per side (runs, or interleaved rounds of one run); * = flagged: n >= 3 on both sides, the "
          "interval excludes 1 and the change exceeds the minimum effect; ? = the same, but a side was timed on an "
          "oversubscribed machine, where waiting for a core is part of the time and shifts with the load: not a "
          "change to act on; env = what differs between the sides "
          "besides the axis compared (rows of different environments are never pooled); agree = worst agreement "
          "ratio (<= 1 agrees). Disagreeing and implausible results are never ranked: they are listed apart.")


def _is(value, wanted: bool) -> bool:
    """``value`` is the boolean ``wanted`` (Python or numpy); None/NaN (no verdict stored) is neither."""
    return isinstance(value, (bool, np.bool_)) and bool(value) is wanted


def _trusted_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Time rows of results that agreed and are not marked implausible."""
    times = frame[frame["metric"] == "time"]
    agreed = times["agrees"].map(lambda v: not _is(v, False))  # a row without a verdict predates the gate
    plausible = ~times["flags"].fillna("").astype(str).str.contains("implausible")
    return times[agreed & plausible]


def excluded(frame: pd.DataFrame) -> pd.DataFrame:
    """Every result that is never ranked: the disagreeing (any metric row says so) and the implausible."""
    columns = ["device", "commit", "run_id", "suite", "case", "mode", "dtype", "provider"]
    wrong = frame[frame["agrees"].map(lambda v: _is(v, False))]
    wrong = wrong.assign(why=[f"DISAGREES (ratio {a:.3g})" for a in wrong["agreement"]])
    flags = frame["flags"].fillna("").astype(str)
    odd = frame[(frame["metric"] == "time") & flags.str.contains("implausible")]
    odd = odd.assign(why=["IMPLAUSIBLE: " + f.split("implausible: ", 1)[-1] for f in odd["flags"]])
    both = pd.concat([wrong, odd])
    return both.drop_duplicates(columns + ["why"])[columns + ["why"]].reset_index(drop=True)


def format_excluded(table: pd.DataFrame) -> str:
    if table.empty:
        return "no disagreeing or implausible results."
    lines = [f"NOT RANKED: {len(table)} result(s) disagree with the gold or are implausible (no speedup is computed "
             "for them):"]
    for row in table.itertuples():
        lines.append(f"  {row.provider:<15} {row.case:<18} {row.mode:<17} {row.dtype:<9} on {row.device} "
                     f"(commit {str(row.commit)[:12]}, run {row.run_id}): {row.why}")
    return "\n".join(lines)


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


def _environment(row) -> tuple:
    return tuple("" if pd.isna(row[c]) else str(row[c]) for c in ENVIRONMENT)


def _observations(group: pd.DataFrame) -> list[float]:
    """Independent observations of one side: each run's median, or, with fewer than three runs, every
    interleaved round's median of every run."""
    if group["run_id"].nunique() >= MIN_OBSERVATIONS:
        return group.groupby("run_id")["p50"].median().tolist()
    rounds = []
    for row in group.itertuples():
        stored = str(row.repeats) if isinstance(row.repeats, str) and row.repeats else ""
        rounds += [float(v) for v in stored.split(";")] if stored else [float(row.p50)]
    return rounds


def _side(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per workload: the observations of the most recent environment only (never pooled across them)."""
    def summarize(group: pd.DataFrame) -> pd.Series:
        group = group.assign(_env=[_environment(r) for _, r in group.iterrows()])
        newest = group.sort_values("timestamp")["_env"].iloc[-1]
        kept = group[group["_env"] == newest]
        values = _observations(kept)
        crowded = kept["flags"].fillna("").astype(str).str.contains("oversubscribed").any()
        return pd.Series({"ms": float(np.median(values)), "obs": values, "n": len(values), "crowded": bool(crowded),
                          "env": dict(zip(ENVIRONMENT, newest, strict=True)),
                          "other_env": int(group["_env"].nunique() - 1),
                          "agree": float(kept["agreement"].max())})

    if frame.empty:
        return pd.DataFrame(columns=["ms", "obs", "n", "crowded", "env", "other_env", "agree"])
    return frame.groupby(keys, sort=False).apply(summarize, include_groups=False)


def ratio_interval(a: list[float], b: list[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                   confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``median(a) / median(b)``: both sides resampled with replacement.

    The seed is fixed so that a table printed twice reads the same.
    """
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ra = np.median(rng.choice(a, size=(resamples, a.size)), axis=1)
    rb = np.median(rng.choice(b, size=(resamples, b.size)), axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ra / rb, [tail, 100 - tail])
    return float(low), float(high)


def _env_difference(a: dict, b: dict) -> str:
    return ", ".join(f"{k} {a[k] or '-'} -> {b[k] or '-'}" for k in ENVIRONMENT if a[k] != b[k])


def speedup_table(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], title: str, *,
                  min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """Join two sides' trusted time rows on ``keys``: medians, speedup A/B, its interval, flagged or not."""
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0, got {min_effect}")
    left, right = _side(_trusted_times(a), keys), _side(_trusted_times(b), keys)
    table = left.add_suffix("_a").join(right.add_suffix("_b"), how="inner").reset_index()
    columns = keys + ["ms_a", "ms_b", "speedup", "ci_low", "ci_high", "n_a", "n_b", "changed", "oversubscribed",
                      "env", "agree_a", "agree_b"]
    if table.empty:
        table = pd.DataFrame(columns=columns)
        table.attrs["title"] = title
        return table
    table["speedup"] = table["ms_a"] / table["ms_b"]
    intervals = [ratio_interval(x, y) for x, y in zip(table["obs_a"], table["obs_b"], strict=True)]
    table["ci_low"], table["ci_high"] = [i[0] for i in intervals], [i[1] for i in intervals]
    enough = (table["n_a"] >= MIN_OBSERVATIONS) & (table["n_b"] >= MIN_OBSERVATIONS)
    outside = (table["ci_low"] > 1) | (table["ci_high"] < 1)
    large = [abs(math.log(s)) > math.log1p(min_effect) for s in table["speedup"]]
    table["changed"] = enough & outside & pd.Series(large, index=table.index)
    table["oversubscribed"] = table["crowded_a"].astype(bool) | table["crowded_b"].astype(bool)
    table["env"] = [_env_difference(x, y) for x, y in zip(table["env_a"], table["env_b"], strict=True)]
    table = table[columns]
    table.attrs["title"] = title
    return table


def providers(frame: pd.DataFrame, a: str, b: str, *, device=None, commit=None, min_effect=MIN_EFFECT,
              **filters) -> pd.DataFrame:
    """Provider ``a`` vs provider ``b`` on one device and commit (default: the most recent measured)."""
    rows = _filter(_trusted_times(frame), **filters)
    rows = rows[rows["provider"].isin([a, b])]
    device = _resolve(rows, "device", device, prefix=False) if device else _latest(rows, "device")
    rows = rows[rows["device"] == device]
    commit = _resolve(rows, "commit", commit, prefix=True) if commit else _latest(rows, "commit")
    rows = rows[rows["commit"] == commit]
    return speedup_table(rows[rows["provider"] == a], rows[rows["provider"] == b], KEYS,
                         f"provider {a} (A) vs {b} (B) on {device}, commit {commit[:12]}", min_effect=min_effect)


def devices(frame: pd.DataFrame, x: str, y: str, *, provider=None, commit=None, min_effect=MIN_EFFECT,
            **filters) -> pd.DataFrame:
    """Device ``x`` vs device ``y`` (names as stored, or a unique part of one); each side's latest commit
    unless ``commit`` fixes one. Cases run at their size for each device, so only equal sizes are joined."""
    rows = _filter(_trusted_times(frame), **filters)
    if provider:
        rows = rows[rows["provider"] == provider]
    sides, commits_used = [], []
    for wanted in (x, y):
        side = rows[rows["device"] == _resolve(rows, "device", wanted, prefix=False)]
        used = _resolve(side, "commit", commit, prefix=True) if commit else _latest(side, "commit")
        sides.append(side[side["commit"] == used])
        commits_used.append(used[:12])
    return speedup_table(*sides, KEYS + ["provider"],
                         f"device {x} (A, commit {commits_used[0]}) vs {y} (B, commit {commits_used[1]})",
                         min_effect=min_effect)


def commits(frame: pd.DataFrame, a: str, b: str, *, device=None, provider=None, min_effect=MIN_EFFECT,
            **filters) -> pd.DataFrame:
    """Commit ``a`` vs commit ``b`` (hashes or unique prefixes) on one device (default: the latest)."""
    rows = _filter(_trusted_times(frame), **filters)
    if provider:
        rows = rows[rows["provider"] == provider]
    device = _resolve(rows, "device", device, prefix=False) if device else _latest(rows, "device")
    rows = rows[rows["device"] == device]
    first, second = (_resolve(rows, "commit", c, prefix=True) for c in (a, b))
    return speedup_table(rows[rows["commit"] == first], rows[rows["commit"] == second], KEYS + ["provider"],
                         f"commit {first[:12]} (A) vs {second[:12]} (B) on {device}", min_effect=min_effect)


def runs(frame: pd.DataFrame, a: str, b: str, *, provider=None, min_effect=MIN_EFFECT, **filters) -> pd.DataFrame:
    """Run ``a`` vs run ``b`` (ids or unique prefixes): two runs of the same commit, say, to see the noise."""
    rows = _filter(_trusted_times(frame), **filters)
    if provider:
        rows = rows[rows["provider"] == provider]
    first, second = (_resolve(rows, "run_id", r, prefix=True) for r in (a, b))
    sides = [rows[rows["run_id"] == r] for r in (first, second)]
    devices_used = {d for side in sides for d in side["device"].unique()}
    return speedup_table(*sides, KEYS + ["provider", "device"],
                         f"run {first} (A) vs {second} (B) on {', '.join(sorted(devices_used))}",
                         min_effect=min_effect)


def against_reference(frame: pd.DataFrame, *, device=None, commit=None, min_effect=MIN_EFFECT,
                      **filters) -> list[pd.DataFrame]:
    """The default `fusebench compare`: the reference against each other provider measured with it."""
    rows = _filter(_trusted_times(frame), **filters)
    device = _resolve(rows, "device", device, prefix=False) if device else _latest(rows, "device")
    rows = rows[rows["device"] == device]
    commit = _resolve(rows, "commit", commit, prefix=True) if commit else _latest(rows, "commit")
    others = [p for p in rows[rows["commit"] == commit]["provider"].unique() if p != "reference"]
    return [providers(frame, "reference", p, device=device, commit=commit, min_effect=min_effect, **filters)
            for p in others]


def fast_p(frame: pd.DataFrame, *, p: float = 1.0, baseline: str = "reference") -> pd.DataFrame:
    """KernelBench's fast_p per (device, provider): of the workloads the provider ran (its latest result on
    each), the share that agree with the gold **and** run more than ``p`` times faster than ``baseline``.

    A disagreeing result counts in the denominator and never in the numerator; an implausible one counts as
    not fast (its figure cannot be trusted).
    """
    if p <= 0:
        raise ValueError(f"p must be > 0, got {p}")
    keys = ["device"] + KEYS
    checked = frame[frame["metric"] == "agreement"].sort_values("timestamp")
    checked = checked.drop_duplicates(keys + ["provider"], keep="last")
    times = _trusted_times(frame).groupby(keys + ["provider"])["p50"].median()
    out = []
    for (device, provider), group in checked.groupby(["device", "provider"]):
        if provider == baseline:
            continue
        fast = 0
        for row in group.itertuples():
            key = (device, *(getattr(row, k) for k in KEYS))
            mine, base = times.get((*key, provider)), times.get((*key, baseline))
            if _is(row.agrees, True) and mine is not None and base is not None and base / mine > p:
                fast += 1
        correct = int(sum(_is(v, True) for v in group["agrees"]))
        out.append({"device": device, "provider": provider, "cases": len(group), "correct": correct, "fast": fast,
                    f"fast_{p:g}": fast / len(group)})
    return pd.DataFrame(out)


def format_fast_p(table: pd.DataFrame, p: float = 1.0) -> str:
    if table.empty:
        return ""
    return (f"fast_{p:g} (KernelBench): share of a provider's cases that agree and beat the reference by more than "
            f"{p:g}x\n" + table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def format_table(table: pd.DataFrame) -> str:
    shown = table.copy()
    if len(shown):
        shown["speedup"] = [f"{s:.2f}{(' ?' if o else ' *') if c else ''}"
                            for s, c, o in zip(shown["speedup"], shown["changed"], shown["oversubscribed"],
                                               strict=True)]
        shown["ci"] = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(shown["ci_low"], shown["ci_high"], strict=True)]
        shown["n"] = [f"{x}/{y}" for x, y in zip(shown["n_a"], shown["n_b"], strict=True)]
        shown["load"] = ["oversubscribed" if o else "" for o in shown["oversubscribed"]]
        shown = shown.drop(columns=["changed", "oversubscribed", "ci_low", "ci_high", "n_a", "n_b"])
        if not shown["load"].astype(bool).any():
            shown = shown.drop(columns=["load"])
        if not shown["env"].astype(bool).any():
            shown = shown.drop(columns=["env"])
        order = [c for c in shown.columns if c not in ("ci", "n", "agree_a", "agree_b")] + ["ci", "n", "agree_a",
                                                                                              "agree_b"]
        shown = shown[[c for c in order if c in shown.columns]]
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.3g}") if len(shown) else "(no common rows)"
    return f"{table.attrs.get('title', '')}\n{text}"
