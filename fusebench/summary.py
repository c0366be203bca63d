"""What `fusebench run` prints: the results table (pandas) and the notes that say how to read it, and the
progress bar on stderr."""

from __future__ import annotations

import math
import sys

import pandas as pd

__all__ = ["format_summary", "progress_bar"]

_COLUMNS = ["case", "provider", "mode", "dtype", "agrees", "ratio", "p50 ms", "p20-p80 ms", "throughput",
            "peak mem", "% peak", "flags"]


def _line(r) -> dict:
    """The table's cells for one result (strings: each column keeps its own number format)."""
    cells = dict.fromkeys(_COLUMNS, "")
    cells.update(case=r.case.name, provider=r.provider, mode=r.mode, dtype=r.dtype)
    if r.status == "error":
        return cells | {"agrees": "ERROR", "flags": r.note}
    cells.update(agrees={True: "agrees", False: "DISAGREES", None: ""}[r.agrees], ratio=f"{r.agreement:.3g}")
    if r.status == "interpreted":
        return cells | {"p50 ms": "interpreted"}
    if r.status == "disagrees":
        return cells | {"p50 ms": "not timed"}
    return cells | {"p50 ms": f"{r.time_ms.p50:.4g}", "p20-p80 ms": f"{r.time_ms.p20:.3g}-{r.time_ms.p80:.3g}",
                    "throughput": f"{r.rate.p50:.3g} {r.rate_unit}" if r.rate else "",
                    "peak mem": f"{r.memory / 2**20:.2f} MB", "% peak": "" if math.isnan(r.share) else f"{r.share:.1f}",
                    "flags": " ".join(filter(None, ["IMPLAUSIBLE" if r.implausible else "",
                                                    "oversubscribed" if r.oversubscribed else ""]))}


def format_summary(report) -> str:
    """The table `fusebench run` prints (a :class:`fusebench.runner.RunReport`), and the notes that say how to
    read it."""
    shown = [r for r in report.results if r.status != "n/a"]
    table = pd.DataFrame([_line(r) for r in shown], columns=_COLUMNS).to_string(index=False) if shown \
        else "(no result ran here)"
    unavailable: dict[str, set] = {}
    for r in report.results:
        if r.status == "n/a":
            unavailable.setdefault(r.provider, set()).add(r.note)
    ident = report.identity
    notes = ["", f"device: {ident.label}; torch {ident.torch}, triton {ident.triton}, commit {ident.commit[:12]}"
                 + (" (with uncommitted changes)" if ident.dirty else ""),
             "ratio: the error against the gold over the allowed error (<= 1 agrees), for the whole output "
             "(forward) and every input gradient (backward), of the very function that was then timed; only a "
             "result that agrees gets a time."]
    golds = sorted({r.gold for r in report.results if r.gold and r.gold != "float64 reference"})
    if golds:
        notes.append(f"gold: the float64 reference, except: {'; '.join(golds)}.")
    wrong = [r for r in report.results if r.agrees is False]
    if wrong:
        notes.append(f"DISAGREEING: {len(wrong)} result(s) are wrong: no time, throughput or memory stored, never "
                     "ranked:")
        notes += [f"  {r.provider} on {r.case.name} {r.mode} ({r.dtype}): ratio {r.agreement:.3g}" for r in wrong]
    implausible = [r for r in report.results if r.implausible]
    if implausible:
        notes.append("IMPLAUSIBLE: faster than physics allows, excluded from speedups:")
        notes += [f"  {r.provider} on {r.case.name} {r.mode}: {r.implausible}" for r in implausible]
    timed = [r for r in report.results if r.status == "measured"]
    if timed:
        threads = sorted({r.threads for r in timed})
        loads = [x for r in timed for x in r.load if not math.isnan(x)]
        load_text = f"; load average {min(loads):.2f}-{max(loads):.2f}" if loads else ""
        notes.append(f"timing: {', '.join(map(str, threads))} torch thread(s){load_text}; each figure pools "
                     f"{max(len(r.repeats) for r in timed)} interleaved round(s).")
        crowded = [r for r in timed if r.oversubscribed]
        if crowded:
            notes.append(f"OVERSUBSCRIBED: {len(crowded)} of {len(timed)} figures were timed while the machine had "
                         "more runnable work than cores; their times include waiting for a core and are not steady.")
    if ident.kind == "cpu":
        notes.append("times: CPU (torch.utils.benchmark.Timer.blocked_autorange); peak mem: bytes of tensors torch "
                     "allocated during one call (no allocator high-water mark exists on the CPU); no % of peak on a "
                     "CPU.")
    if any(r.status == "interpreted" for r in report.results):
        notes.append("Triton kernels ran under the Triton interpreter: those rows show agreement only. An "
                     "interpreter time is the time of a numpy emulation, not a kernel timing, and is never reported.")
    for provider, reasons in sorted(unavailable.items()):
        notes.append(f"not run here: {provider}: {'; '.join(sorted(reasons))}")
    for suite, reason in report.missing_suites.items():
        notes.append(f"{suite} suite absent: {reason}")
    if report.stored:
        notes.append(f"{sum(1 for _ in report.stored)} file(s) of rows appended under "
                     f"{report.stored[0].parent} (run {report.run_id})")
    return "\n".join([table] + notes)


def progress_bar(total: int):
    """A tqdm bar on stderr (silent when stderr is not a terminal), as a ``progress`` callable."""
    from tqdm import tqdm

    bar = tqdm(total=total, file=sys.stderr, disable=None, unit="step", leave=False)

    def step(description: str) -> None:
        bar.set_description(description[:40])
        bar.update(1)

    step.close = bar.close
    return step
