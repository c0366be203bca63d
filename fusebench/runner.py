"""`fusebench run`: every case on every provider that can run it here, measured and stored.

For each case (the real size on a GPU, the CPU-sized variant on a CPU) and dtype:

1. **Agreement first.** Gold is the reference in float64 on the device, the baseline the reference in
   the dtype; each provider's output (forward) and input gradients (backward) are judged by
   :func:`fusebench.agreement.check`. Every speed figure below carries that ratio. Where the full
   float64 gold of an attention case would be too large, it is computed on one slice (the last batch
   entry, the last key/value head and its query heads), which attention computes independently.
2. **Speed and memory**, per mode (forward under no_grad; backward of a stored forward; both),
   with :mod:`fusebench.metrics`: latency quantiles, peak memory, TFLOP/s or GB/s, share of peak.
   A Triton kernel under TRITON_INTERPRET=1 is a numpy emulation: it gets its agreement checked and
   no time, memory or throughput, ever.
3. **Rows** for the results store: one per (case, provider, mode, metric), appended once per case so a
   crash keeps the cases already measured.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import torch

from fusebench import cases as catalog
from fusebench.agreement import check, check_baseline
from fusebench.device import DeviceIdentity, interpreting_triton
from fusebench.metrics import Quantiles, measure_time, peak_memory, spec_peak, throughput
from fusebench.providers import Provider, Unavailable, Workload, graph_suite_missing, make_workload, providers
from fusebench.store import ResultsStore, new_run_id

__all__ = ["Result", "RunReport", "run", "format_summary", "INTERPRETER_NOTE"]

INTERPRETER_NOTE = ("interpreted: TRITON_INTERPRET=1 emulates the kernel on the CPU (numpy); "
                    "agreement only, its time is not a kernel time")
# Largest float64 gold computed whole: 2^27 score elements (1 GiB of float64 scores per tensor).
GOLD_ELEMENTS = 1 << 27
# The interpreter runs a kernel's every program in Python: keep it to cases it finishes in seconds.
INTERPRETER_FLOPS = 3.5e7  # attention forward FLOPs: bert-base-128/256, clip-text-77, varlen-mixed (CPU sizes)
# graphs: edges x features. The interpreter runs ~10 ms per program and graph kernels launch one program
# per row segment and feature tile, so even cora-like (2.7k rows, 8 GAT heads) took 6 minutes to emulate:
# graph catalog cases are not emulated; suites/correctness checks the graph kernels on small graphs.
INTERPRETER_GATHERS = 2e5


@dataclass
class Result:
    """One (case, provider, mode): its agreement and, when timed, its measurements."""

    case: catalog.AttentionCase | catalog.GraphCase
    provider: str
    mode: str
    dtype: str
    status: str  # "measured", "interpreted", "n/a" (the provider cannot run it) or "error"
    note: str = ""
    agreement: float = math.nan
    agrees: bool | None = None
    time_ms: Quantiles | None = None
    samples: int = 0
    rate: Quantiles | None = None  # TFLOP/s or GB/s
    rate_unit: str = ""
    share: float = math.nan  # percent of the device's peak at p50
    share_source: str = ""
    memory: int | None = None
    memory_note: str = ""


@dataclass
class RunReport:
    identity: DeviceIdentity
    run_id: str
    results: list[Result] = field(default_factory=list)
    stored: list = field(default_factory=list)  # paths of the appended files
    missing_suites: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(r.status == "error" or r.agrees is False for r in self.results)


# --------------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------------


def _gold_view(case, wl: Workload):
    """(select, sliced) where ``select(name, t)`` cuts a full-size tensor to the checked slice.

    ``name`` is an input's name or "out" (laid out like ``q`` for attention, like ``x`` for graphs).
    """
    whole = lambda name, t: t
    if not isinstance(case, catalog.AttentionCase) or case.seqlens:
        return whole, wl
    if case.batch * case.heads * case.seq_q * case.seq_k <= GOLD_ELEMENTS:
        return whole, wl
    b, j, g = case.batch - 1, case.kv_heads - 1, case.heads // case.kv_heads

    def select(name, t):
        return t[b : b + 1, j * g : (j + 1) * g] if name in ("q", "out") else t[b : b + 1, j : j + 1]

    sliced = Workload(case, wl.device, wl.dtype, {k: select(k, v).contiguous() for k, v in wl.inputs.items()},
                      select("out", wl.dout).contiguous(), wl.context)
    return select, sliced


def _forward(fn, wl: Workload, need_grads: bool):
    """(output, the inputs it was computed from); the inputs require grad when ``need_grads``."""
    inputs = [t.detach().clone().requires_grad_(need_grads) for t in wl.inputs.values()]
    with torch.set_grad_enabled(need_grads):
        return fn(*inputs), inputs


def _forward_and_grads(fn, wl: Workload, need_grads: bool):
    out, inputs = _forward(fn, wl, need_grads)
    grads = torch.autograd.grad(out, inputs, wl.dout) if need_grads else None
    return out.detach(), grads


@dataclass
class _Gold:
    select: object
    out: torch.Tensor
    base_out: torch.Tensor
    grads: tuple | None
    base_grads: tuple | None


def _gold(case, wl: Workload, reference: Provider, need_grads: bool) -> _Gold:
    select, sliced = _gold_view(case, wl)
    gold_wl = sliced.cast(torch.float64)
    out, grads = _forward_and_grads(reference.build(case, gold_wl), gold_wl, need_grads)
    base_out, base_grads = _forward_and_grads(reference.build(case, sliced), sliced, need_grads)
    return _Gold(select, out, base_out, grads, base_grads)


def _verdicts(gold: _Gold, names, out, grads, provider: str):
    if provider == "reference":  # the eager reference is the baseline: measured against gold, not judged
        def judge(cand, g, _base, **kw):
            return check_baseline(cand, g, **kw)
    else:
        judge = check
    out_verdict = judge(gold.select("out", out), gold.out, gold.base_out, name=f"{provider} output")
    grad_verdicts = []
    if grads is not None:
        for name, grad, gold_grad, base_grad in zip(names, grads, gold.grads, gold.base_grads, strict=True):
            grad_verdicts.append(judge(gold.select(name, grad), gold_grad, base_grad, gradient=True,
                                       name=f"{provider} d{name}"))
    return out_verdict, grad_verdicts


# --------------------------------------------------------------------------------------------------
# Measuring one (case, provider)
# --------------------------------------------------------------------------------------------------


def _mode_function(fn, wl: Workload, mode: str):
    inputs = [t.detach().clone().requires_grad_(mode != "forward") for t in wl.inputs.values()]
    if mode == "forward":
        def forward():
            with torch.no_grad():
                return fn(*inputs)
        return forward
    if mode == "backward":
        out = fn(*inputs)
        return lambda: torch.autograd.grad(out, inputs, wl.dout, retain_graph=True)
    return lambda: torch.autograd.grad(fn(*inputs), inputs, wl.dout)


def _interpreter_too_large(case) -> bool:
    if isinstance(case, catalog.AttentionCase):
        return case.flops("forward") > INTERPRETER_FLOPS
    return case.num_edges * case.features > INTERPRETER_GATHERS


def _rate(case, mode: str, wl: Workload, time_ms: Quantiles) -> tuple[Quantiles, str]:
    if isinstance(case, catalog.AttentionCase):
        return throughput(case.flops(mode), time_ms, 1e12), "TFLOP/s"
    edges = int(wl.context["edge_index"].shape[1])
    moved = case.bytes_moved(mode, value_bytes=wl.dtype.itemsize, index_bytes=8, num_edges=edges)
    return throughput(moved, time_ms, 1e9), "GB/s"


def _share(ident: DeviceIdentity, unit: str, dtype: str, rate: float, ceilings: dict) -> tuple[float, str]:
    """Percent of the device's peak, preferring a ceiling measured on the device over the spec sheet."""
    if ident.kind != "cuda":
        return math.nan, ""
    key = f"tflops:{dtype}" if unit == "TFLOP/s" else "bandwidth_gbps"
    if key in ceilings:
        return 100 * rate / ceilings[key][0], f"measured: {ceilings[key][1]}"
    peak = spec_peak(ident.name)
    if peak is None:
        return math.nan, f"no peak known for {ident.name}"
    ceiling = peak.tflops.get(dtype) if unit == "TFLOP/s" else peak.bandwidth_gbps
    return (100 * rate / ceiling, peak.source) if ceiling else (math.nan, f"{peak.source} has no {dtype} peak")


def _measure_provider(case, provider: Provider, wl: Workload, gold: _Gold, modes, ident, ceilings) -> list[Result]:
    dtype = str(wl.dtype).removeprefix("torch.")
    result = lambda mode, status, **kw: Result(case, provider.name, mode, dtype, status, **kw)
    interpreted = provider.triton and ident.kind == "cpu"
    if interpreted and not interpreting_triton():
        return [result(m, "n/a", note="Triton kernels need CUDA, or TRITON_INTERPRET=1 to emulate") for m in modes]
    if interpreted and _interpreter_too_large(case):
        return [result(m, "n/a", note="too large for the Triton interpreter; agreement is checked on smaller cases")
                for m in modes]
    need_grads = any(m != "forward" for m in modes)
    grads, no_backward = None, None
    try:
        fn = provider.build(case, wl)
        out, inputs = _forward(fn, wl, need_grads)
        if need_grads:
            try:
                grads = torch.autograd.grad(out, inputs, wl.dout)
            except NotImplementedError as error:  # a forward-only provider: its forward is still measured
                no_backward = error
    except (Unavailable, NotImplementedError) as error:
        return [result(m, "n/a", note=str(error)) for m in modes]
    except Exception as error:  # a provider that crashes is reported, and the run goes on
        return [result(m, "error", note=f"{type(error).__name__}: {error}") for m in modes]
    out_verdict, grad_verdicts = _verdicts(gold, list(wl.inputs), out.detach(), grads, provider.name)

    results = []
    for mode in modes:
        if mode != "forward" and no_backward is not None:
            results.append(result(mode, "n/a", note=f"no backward: {no_backward}"))
            continue
        verdicts = ([out_verdict] if mode != "backward" else []) + (grad_verdicts if mode != "forward" else [])
        worst = max(verdicts, key=lambda v: v.ratio)
        r = result(mode, "interpreted" if interpreted else "measured", agreement=worst.ratio, agrees=worst.passed,
                   note=INTERPRETER_NOTE if interpreted else ("" if worst.passed else worst.describe()))
        if not interpreted:
            timed = _mode_function(fn, wl, mode)
            r.time_ms, r.samples = measure_time(timed, wl.device)
            r.memory, r.memory_note = peak_memory(timed, wl.device)
            r.rate, r.rate_unit = _rate(case, mode, wl, r.time_ms)
            r.share, r.share_source = _share(ident, r.rate_unit, dtype, r.rate.p50, ceilings)
        results.append(r)
    return results


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


def _identity_columns(ident: DeviceIdentity) -> dict:
    d = ident.as_dict()
    d["device_kind"], d["device"] = d.pop("kind"), d.pop("name")
    return d


def rows_for(result: Result, ident: DeviceIdentity, run_id: str, timestamp: str) -> list[dict]:
    """The store rows of one result: time, throughput, share of peak, memory and agreement."""
    case = result.case
    base = {"run_id": run_id, "timestamp": timestamp, "suite": case.suite, "case": case.name, "size": case.size,
            "shape": case.shape_text(), "x": case.x, "provider": result.provider, "mode": result.mode,
            "dtype": result.dtype, "agreement": result.agreement, "agrees": result.agrees, "note": result.note,
            **_identity_columns(ident)}
    if result.status not in ("measured", "interpreted"):
        return []
    rows = [{**base, "metric": "agreement", "unit": "error/allowed",
             **_quantile_columns(Quantiles.constant(result.agreement)), "samples": 1}]
    if result.status == "measured":
        rows.append({**base, "metric": "time", "unit": "ms", **_quantile_columns(result.time_ms),
                     "samples": result.samples})
        rate_metric = "tflops" if result.rate_unit == "TFLOP/s" else "gbps"
        rows.append({**base, "metric": rate_metric, "unit": result.rate_unit, **_quantile_columns(result.rate),
                     "samples": result.samples})
        if not math.isnan(result.share):
            rows.append({**base, "metric": "peak_share", "unit": "%", "note": result.share_source,
                         **_quantile_columns(Quantiles.constant(result.share)), "samples": result.samples})
        rows.append({**base, "metric": "memory", "unit": "bytes", "note": result.memory_note,
                     **_quantile_columns(Quantiles.constant(float(result.memory))), "samples": 1})
    return rows


def _quantile_columns(q: Quantiles) -> dict:
    return {"p20": q.p20, "p50": q.p50, "p80": q.p80}


def ceiling_rows(ceilings: dict, ident: DeviceIdentity, run_id: str, timestamp: str) -> list[dict]:
    rows = []
    for key, (value, how) in ceilings.items():
        metric, unit = ("bandwidth", "GB/s") if key == "bandwidth_gbps" else (key.replace(":", "-"), "TFLOP/s")
        rows.append({"run_id": run_id, "timestamp": timestamp, "suite": "ceiling", "case": "device-ceiling",
                     "size": "gpu", "shape": "", "x": "", "provider": "torch", "mode": "measured", "dtype": "",
                     "metric": metric, "unit": unit, **_quantile_columns(Quantiles.constant(value)), "samples": 1,
                     "note": how, **_identity_columns(ident)})
    return rows


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def run(*, suites=("attention", "graph"), case_names=None, provider_names=None, modes=catalog.MODES,
        dtype: str | None = None, ident: DeviceIdentity, store: ResultsStore | None, progress: bool = False,
        ceilings: dict | None = None) -> RunReport:
    """Benchmark and store; returns what was measured (the CLI prints :func:`format_summary` of it).

    ``progress``: show a progress bar on stderr (a terminal only).
    """
    import time

    device = ident.kind
    dtype = dtype or ("bfloat16" if device == "cuda" else "float32")
    torch_dtype = getattr(torch, dtype)
    report = RunReport(ident, new_run_id())
    timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ceilings = ceilings or {}
    if store is not None and ceilings:
        report.stored.append(store.append(ceiling_rows(ceilings, ident, report.run_id, timestamp)))
    plan = []
    for suite in suites:
        missing = graph_suite_missing() if suite == "graph" else None
        if missing:
            report.missing_suites[suite] = missing
            continue
        known = providers(suite)
        chosen = [p for p in known if provider_names is None or p.name in provider_names]
        reference = next(p for p in known if p.name == "reference")
        names = [n for n in catalog.names(suite) if case_names is None or n in case_names]
        plan += [(name, chosen, reference) for name in names]
    step = progress_bar(sum(1 + len(chosen) for _, chosen, _ in plan)) if progress else None
    try:
        _run_plan(plan, report, modes, torch_dtype, dtype, ident, store, step, ceilings, timestamp)
    finally:
        if step:
            step.close()
    return report


def _run_plan(plan, report, modes, torch_dtype, dtype, ident, store, progress, ceilings, timestamp) -> None:
    device = ident.kind
    for name, chosen, reference in plan:
        case = catalog.for_device(name, device)
        if progress:
            progress(f"{name}: gold")
        try:
            wl = make_workload(case, device, torch_dtype)
            gold = _gold(case, wl, reference, any(m != "forward" for m in modes))
        except Unavailable as error:
            report.results.append(Result(case, "*", "*", dtype, "n/a", note=str(error)))
            continue
        case_results = []
        for provider in chosen:
            if progress:
                progress(f"{name}: {provider.name}")
            case_results += _measure_provider(case, provider, wl, gold, modes, ident, ceilings)
        report.results += case_results
        if store is not None:
            rows = [row for r in case_results for row in rows_for(r, ident, report.run_id, timestamp)]
            path = store.append(rows)
            if path is not None:
                report.stored.append(path)


def _format_rate(r: Result) -> str:
    return f"{r.rate.p50:.3g} {r.rate_unit}" if r.rate else ""


def format_summary(report: RunReport) -> str:
    """The table `fusebench run` prints, and the notes that say how to read it."""
    header = (f"{'case':<18} {'provider':<15} {'mode':<17} {'dtype':<9} {'agrees':<9} {'ratio':>7} "
              f"{'p50 ms':>11} {'p20-p80 ms':>17} {'throughput':>15} {'peak mem':>10} {'% peak':>7}")
    lines = [header, "-" * len(header)]
    unavailable: dict[str, set] = {}
    for r in report.results:
        if r.status == "n/a":
            unavailable.setdefault(r.provider, set()).add(r.note)
            continue
        agrees = {True: "agrees", False: "DISAGREES", None: ""}[r.agrees]
        if r.status == "error":
            lines.append(f"{r.case.name:<18} {r.provider:<15} {r.mode:<17} {r.dtype:<9} ERROR      {r.note}")
            continue
        if r.status == "interpreted":
            time_text, spread, rate, memory, share = "interpreted", "", "", "", ""
        else:
            time_text = f"{r.time_ms.p50:.4g}"
            spread = f"{r.time_ms.p20:.3g}-{r.time_ms.p80:.3g}"
            rate, memory = _format_rate(r), f"{r.memory / 2**20:.2f} MB"
            share = "" if math.isnan(r.share) else f"{r.share:.1f}"
        lines.append(f"{r.case.name:<18} {r.provider:<15} {r.mode:<17} {r.dtype:<9} {agrees:<9} {r.agreement:>7.3f} "
                     f"{time_text:>11} {spread:>17} {rate:>15} {memory:>10} {share:>7}")
    ident = report.identity
    notes = ["", f"device: {ident.label}; torch {ident.torch}, triton {ident.triton}, commit {ident.commit[:12]}"
                 + (" (with uncommitted changes)" if ident.dirty else ""),
             "ratio: the error against the float64 gold over the allowed error (<= 1 agrees), for the output "
             "(forward) and the input gradients (backward); every time above belongs to a result that was checked."]
    if ident.kind == "cpu":
        notes.append("times: CPU wall-clock (pytest-benchmark's timer); peak mem: bytes of tensors torch allocated "
                     "during one call (no allocator high-water mark exists on the CPU); no % of peak on a CPU.")
    if any(r.status == "interpreted" for r in report.results):
        notes.append("Triton kernels ran under TRITON_INTERPRET=1, the CPU interpreter: those rows show agreement "
                     "only. An interpreter time is the time of a numpy emulation, not a kernel timing, and is "
                     "never reported.")
    for provider, reasons in sorted(unavailable.items()):
        notes.append(f"not run here: {provider}: {'; '.join(sorted(reasons))}")
    for suite, reason in report.missing_suites.items():
        notes.append(f"{suite} suite absent: {reason}")
    if report.stored:
        notes.append(f"{sum(1 for _ in report.stored)} file(s) of rows appended under "
                     f"{report.stored[0].parent}")
    return "\n".join(lines + notes)


def progress_bar(total: int):
    """A tqdm bar on stderr (silent when stderr is not a terminal), as a ``progress`` callable."""
    from tqdm import tqdm

    bar = tqdm(total=total, file=sys.stderr, disable=None, unit="step", leave=False)

    def step(description: str) -> None:
        bar.set_description(description[:40])
        bar.update(1)

    step.close = bar.close
    return step


# --------------------------------------------------------------------------------------------------
# One (case, provider, mode) at a time: what the pytest-benchmark and asv suites measure
# --------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A case on one provider, ready to time: ``call()`` runs one ``mode`` step."""

    case: catalog.AttentionCase | catalog.GraphCase
    provider: Provider
    mode: str
    workload: Workload
    call: object
    interpreted: bool  # a Triton kernel under TRITON_INTERPRET=1: check agreement, never time it

    def agreement(self):
        """The worst verdict of this mode's output (forward) and input gradients (backward)."""
        reference = next(p for p in providers(self.case.suite) if p.name == "reference")
        need_grads = self.mode != "forward"
        gold = _gold(self.case, self.workload, reference, need_grads)
        fn = self.provider.build(self.case, self.workload)
        out, grads = _forward_and_grads(fn, self.workload, need_grads)
        out_verdict, grad_verdicts = _verdicts(gold, list(self.workload.inputs), out, grads, self.provider.name)
        verdicts = ([out_verdict] if self.mode != "backward" else []) + grad_verdicts
        return max(verdicts, key=lambda v: v.ratio)

    def work(self) -> tuple[float, str]:
        """(FLOPs or bytes of one call, "TFLOP/s" or "GB/s")."""
        rate, unit = _rate(self.case, self.mode, self.workload, Quantiles.constant(1e3))
        return rate.p50 * (1e12 if unit == "TFLOP/s" else 1e9), unit


def prepare(case_name: str, provider_name: str, mode: str, *, device: str | None = None,
            dtype: str | None = None) -> Prepared:
    """Build ``case_name`` (sized for the device) on ``provider_name`` for ``mode``.

    Raises :class:`NotImplementedError` with the reason when the provider cannot run it here (asv
    reads that as "skip"); :func:`fusebench.runner.run` reports the same reasons in its table.
    """
    if mode not in catalog.MODES:
        raise ValueError(f"mode must be one of {catalog.MODES}, got {mode!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    case = catalog.for_device(case_name, device)
    missing = graph_suite_missing() if case.suite == "graph" else None
    if missing:
        raise NotImplementedError(f"graph suite absent: {missing}")
    provider = next((p for p in providers(case.suite) if p.name == provider_name), None)
    if provider is None:
        raise NotImplementedError(f"provider {provider_name!r} is not available here")
    interpreted = provider.triton and device == "cpu"
    if interpreted and not interpreting_triton():
        raise NotImplementedError("Triton kernels need CUDA, or TRITON_INTERPRET=1 to emulate")
    if interpreted and _interpreter_too_large(case):
        raise NotImplementedError("too large for the Triton interpreter; suites/correctness checks the kernel's "
                                  "agreement on smaller inputs")
    dtype = dtype or ("bfloat16" if device == "cuda" else "float32")
    try:
        workload = make_workload(case, device, getattr(torch, dtype))
        fn = provider.build(case, workload)
        call = _mode_function(fn, workload, mode)
        call()  # a provider that cannot run these inputs says so here
    except Unavailable as error:
        raise NotImplementedError(str(error)) from None
    return Prepared(case, provider, mode, workload, call, interpreted)
