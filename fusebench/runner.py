"""`fusebench run`: every case on every provider that can run it here, checked, then measured and stored.

For each case (the real size on a GPU, the CPU-sized variant on a CPU) and dtype:

1. **Agreement gates every figure.** Gold is the reference in float64 on the device (in float32 on the
   device where a float64 attention would be too large: the row's ``gold`` says which), the baseline the
   reference in the dtype. For each mode, the very function that will be timed (forward under no_grad;
   backward of a stored forward; both) is called once and its whole output (forward) and every input
   gradient (backward) are judged by :func:`fusebench.agreement.check`. A result that disagrees is
   stored with its verdict and ratio and **no** time, throughput or memory figure.
2. **Speed and memory** of what agreed, with :mod:`fusebench.metrics`: on the CPU torch's
   ``blocked_autorange`` with an explicit thread count, the load average around it, and a run on an
   oversubscribed machine marked so; on a GPU ``do_bench`` samples (and a CUDA-graph replay for
   launch-bound calls). The providers of a case are timed in ``repeats`` interleaved rounds, so one run
   holds independent repetitions that `fusebench compare` can test. A figure faster than 0.9x its
   roofline bound, or above 100% of the device's spec-sheet peak, is marked implausible with the reason.
   A Triton kernel under the interpreter (TRITON_INTERPRET as Triton reads it, on any device) is a numpy
   emulation: it gets its agreement checked and no time, memory or throughput, ever.
3. **Rows** for the results store: one per (case, provider, mode, metric), appended once per case so a
   crash keeps the cases already measured.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import torch

from fusebench import cases as catalog
from fusebench import roofline
from fusebench.agreement import check, check_baseline
from fusebench.device import DeviceIdentity, interpreting_triton
from fusebench.metrics import Quantiles, Timing, peak_memory, spec_peak, throughput, timing
from fusebench.providers import Provider, Unavailable, Workload, graph_suite_missing, make_workload, providers
from fusebench.store import ResultsStore, new_run_id

__all__ = ["Result", "RunReport", "run", "run_one", "format_summary", "INTERPRETER_NOTE", "REPEATS", "plausibility"]

INTERPRETER_NOTE = ("interpreted: the Triton interpreter emulates the kernel on the CPU (numpy); "
                    "agreement only, its time is not a kernel time")
# Largest float64 attention gold: 2^27 score elements (1 GiB of float64 scores per tensor). Beyond it the
# gold is the reference in float32 on the device: still far more precise than the bf16/fp16 candidates.
GOLD_ELEMENTS = 1 << 27
# The interpreter runs a kernel's every program in Python: keep it to cases it finishes in seconds.
INTERPRETER_FLOPS = 3.5e7  # attention forward FLOPs: bert-base-128/256, clip-text-77, varlen-mixed (CPU sizes)
# graphs: edges x features. The interpreter runs ~10 ms per program and graph kernels launch one program
# per row segment and feature tile, so even cora-like (2.7k rows, 8 GAT heads) took 6 minutes to emulate:
# graph catalog cases are not emulated; suites/correctness checks the graph kernels on small graphs.
INTERPRETER_GATHERS = 2e5
# Interleaved timing rounds per case: three independent repetitions in one run are the fewest from which
# `fusebench compare` flags a change.
REPEATS = 3
# A time below this share of the roofline lower bound cannot be real (the bound is already the hardware's
# limit; 10% covers spec-sheet rounding and boost clocks).
PLAUSIBLE_SHARE_OF_BOUND = 0.9


@dataclass
class Result:
    """One (case, provider, mode): its agreement and, when it agreed and was timed, its measurements."""

    case: catalog.AttentionCase | catalog.GraphCase
    provider: str
    mode: str
    dtype: str
    # "measured", "disagrees" (checked, wrong: no figure), "interpreted", "n/a" (cannot run it) or "error"
    status: str
    note: str = ""
    agreement: float = math.nan
    agrees: bool | None = None
    gold: str = ""  # which gold the agreement was judged against
    time_ms: Quantiles | None = None
    samples: int = 0
    repeats: list = field(default_factory=list)  # the median of each interleaved round
    threads: int = 0
    load: tuple = (math.nan, math.nan)  # load average before the first round and after the last
    graph_ms: Quantiles | None = None  # CUDA-graph replay of a launch-bound call
    rate: Quantiles | None = None  # TFLOP/s or GB/s
    rate_unit: str = ""
    share: float = math.nan  # percent of the device's peak at p50
    share_source: str = ""
    memory: int | None = None
    memory_note: str = ""
    oversubscribed: bool = False
    implausible: str = ""  # why the figure cannot be real; "" when it can

    @property
    def flags(self) -> str:
        marks = (["oversubscribed"] if self.oversubscribed else []) + (
            [f"implausible: {self.implausible}"] if self.implausible else [])
        return "; ".join(marks)


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


def gold_precision(case, device: str) -> tuple[torch.dtype, str]:
    """(dtype of the gold, how the rows name it): float64, or float32 on the device for large attention."""
    if isinstance(case, catalog.AttentionCase):
        pairs = sum(n * n for n in case.seqlens) if case.seqlens else case.batch * case.seq_q * case.seq_k
        if case.heads * pairs > GOLD_ELEMENTS:
            return torch.float32, f"float32 reference on {device} (float64 too costly at this size)"
    return torch.float64, "float64 reference"


def _forward_and_grads(fn, wl: Workload, need_grads: bool):
    inputs = [t.detach().clone().requires_grad_(need_grads) for t in wl.inputs.values()]
    with torch.set_grad_enabled(need_grads):
        out = fn(*inputs)
    grads = torch.autograd.grad(out, inputs, wl.dout) if need_grads else None
    return out.detach(), grads


@dataclass
class _Gold:
    description: str
    out: torch.Tensor
    base_out: torch.Tensor
    grads: tuple | None
    base_grads: tuple | None


def _gold(case, wl: Workload, reference: Provider, need_grads: bool) -> _Gold:
    dtype, description = gold_precision(case, str(wl.device))
    gold_wl = wl.cast(dtype)
    out, grads = _forward_and_grads(reference.build(case, gold_wl), gold_wl, need_grads)
    base_out, base_grads = _forward_and_grads(reference.build(case, wl), wl, need_grads)
    return _Gold(description, out, base_out, grads, base_grads)


def _split(mode: str, value) -> tuple[torch.Tensor | None, tuple | None]:
    """(output, input gradients) of what a mode function returned (see :func:`_mode_function`)."""
    if mode == "forward":
        return value, None
    if mode == "backward":
        return None, tuple(value)
    return value[0], tuple(value[1:])


def _verdicts(gold: _Gold, names, out, grads, provider: str) -> list:
    if provider == "reference":  # the eager reference is the baseline: measured against gold, not judged
        def judge(cand, g, _base, **kw):
            return check_baseline(cand, g, **kw)
    else:
        judge = check
    verdicts = []
    if out is not None:
        verdicts.append(judge(out.detach(), gold.out, gold.base_out, name=f"{provider} output"))
    if grads is not None:
        if gold.grads is None:
            raise ValueError("the gold was computed without gradients; a backward mode needs them")
        for name, grad, gold_grad, base_grad in zip(names, grads, gold.grads, gold.base_grads, strict=True):
            verdicts.append(judge(grad, gold_grad, base_grad, gradient=True, name=f"{provider} d{name}"))
    return verdicts


# --------------------------------------------------------------------------------------------------
# Checking and measuring one (case, provider)
# --------------------------------------------------------------------------------------------------


def _mode_function(fn, wl: Workload, mode: str):
    """The function that is both checked and timed for ``mode``.

    forward: the output, under no_grad; backward: the input gradients of one stored forward;
    forward+backward: (output, *input gradients) of a fresh forward and its backward.
    """
    inputs = [t.detach().clone().requires_grad_(mode != "forward") for t in wl.inputs.values()]
    if mode == "forward":
        def forward():
            with torch.no_grad():
                return fn(*inputs)
        return forward
    if mode == "backward":
        out = fn(*inputs)
        return lambda: torch.autograd.grad(out, inputs, wl.dout, retain_graph=True)

    def forward_backward():
        out = fn(*inputs)
        return (out.detach(), *torch.autograd.grad(out, inputs, wl.dout))

    return forward_backward


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


def plausibility(case, mode: str, dtype: str, time_ms: float, rate: float, unit: str, peak) -> str:
    """Why a measured figure cannot be real on the device ``peak`` describes ("" when it can).

    Faster than :data:`PLAUSIBLE_SHARE_OF_BOUND` of the roofline lower bound, or a rate above 100% of
    the spec-sheet peak: a timer that missed the work (an unsynchronised launch), a provider that skipped
    it, or a wrong device table. No peak (a CPU, an unknown GPU): nothing to judge against.
    """
    if peak is None:
        return ""
    try:
        limit = roofline.bound(case, mode, dtype, peak)
    except ValueError:  # a dtype the table has no peak for
        return ""
    reasons = []
    if time_ms < PLAUSIBLE_SHARE_OF_BOUND * limit.ms:
        reasons.append(f"{time_ms:.4g} ms is faster than {PLAUSIBLE_SHARE_OF_BOUND}x the {limit.bound_by} "
                       f"bound {limit.ms:.4g} ms on {roofline.label(peak)}")
    ceiling = peak.tflops.get(dtype if isinstance(case, catalog.AttentionCase) else "float32") \
        if unit == "TFLOP/s" else peak.bandwidth_gbps
    if ceiling and rate > ceiling:
        reasons.append(f"{rate:.4g} {unit} is above the {roofline.label(peak)} peak {ceiling:.4g} {unit}")
    return "; ".join(reasons)


def _check_provider(case, provider: Provider, wl: Workload, gold: _Gold, modes, ident) -> list[tuple]:
    """[(Result, the function to time or None)] per mode: each mode's timed function, checked once."""
    dtype = str(wl.dtype).removeprefix("torch.")
    result = lambda mode, status, **kw: Result(case, provider.name, mode, dtype, status, **kw)
    interpreted = provider.triton and interpreting_triton()
    if provider.triton and not interpreted and ident.kind != "cuda":
        return [(result(m, "n/a", note="Triton kernels need CUDA, or TRITON_INTERPRET=1 to emulate"), None)
                for m in modes]
    if interpreted and _interpreter_too_large(case):
        return [(result(m, "n/a", note="too large for the Triton interpreter; agreement is checked on smaller "
                                       "cases"), None) for m in modes]
    try:
        fn = provider.build(case, wl)
    except (Unavailable, NotImplementedError) as error:
        return [(result(m, "n/a", note=str(error)), None) for m in modes]
    except Exception as error:  # a provider that crashes is reported, and the run goes on
        return [(result(m, "error", note=f"{type(error).__name__}: {error}"), None) for m in modes]
    checked = []
    emulated = None  # interpreted: nothing is timed, so one forward and backward serve every mode's check
    for mode in modes:
        try:
            if interpreted:
                emulated = emulated or _forward_and_grads(fn, wl, any(m != "forward" for m in modes))
                timed = None
                out, grads = (emulated[0] if mode != "backward" else None), (emulated[1] if mode != "forward"
                                                                            else None)
            else:
                timed = _mode_function(fn, wl, mode)
                out, grads = _split(mode, timed())
        except Unavailable as error:
            checked.append((result(mode, "n/a", note=str(error)), None))
            continue
        except NotImplementedError as error:  # a forward-only provider: its forward is still measured
            checked.append((result(mode, "n/a", note=f"no backward: {error}" if mode != "forward" else str(error)),
                            None))
            continue
        except Exception as error:
            checked.append((result(mode, "error", note=f"{type(error).__name__}: {error}"), None))
            continue
        worst = max(_verdicts(gold, list(wl.inputs), out, grads, provider.name), key=lambda v: v.ratio)
        status = "interpreted" if interpreted else ("measured" if worst.passed else "disagrees")
        note = INTERPRETER_NOTE if interpreted else ("" if worst.passed else worst.describe())
        r = result(mode, status, agreement=worst.ratio, agrees=worst.passed, gold=gold.description, note=note)
        checked.append((r, timed if status == "measured" else None))
    return checked


def _measure(checked: list[tuple], wl: Workload, ident: DeviceIdentity, ceilings: dict, repeats: int,
             threads: int | None) -> None:
    """Time every checked, agreeing function in ``repeats`` interleaved rounds; fill in its figures."""
    timed = [(r, fn) for r, fn in checked if fn is not None]
    rounds: dict[int, list[Timing]] = {id(r): [] for r, _ in timed}
    for round_number in range(repeats):
        for r, fn in timed:  # the agreement check was the first call: the first round needs no other warm-up;
            # a launch-bound GPU call's CUDA-graph figure is taken in the first round only
            rounds[id(r)].append(timing(fn, wl.device, num_threads=threads, warmup=False,
                                        graph=None if round_number == 0 else False))
    peak = spec_peak(ident.name) if ident.kind == "cuda" else None
    for r, fn in timed:
        done = rounds[id(r)]
        samples = [s for t in done for s in t.samples]
        r.time_ms, r.samples = Quantiles.of(samples), len(samples)
        r.repeats = [t.quantiles.p50 for t in done]
        r.threads, r.load = done[0].threads, (done[0].load_before, done[-1].load_after)
        r.oversubscribed = any(t.oversubscribed for t in done)
        r.graph_ms = done[0].graph
        r.memory, r.memory_note = peak_memory(fn, wl.device)
        r.rate, r.rate_unit = _rate(r.case, r.mode, wl, r.time_ms)
        r.share, r.share_source = _share(ident, r.rate_unit, r.dtype, r.rate.p50, ceilings)
        r.implausible = plausibility(r.case, r.mode, r.dtype, r.time_ms.p50, r.rate.p50, r.rate_unit, peak)


def _measure_provider(case, provider: Provider, wl: Workload, gold: _Gold, modes, ident, ceilings,
                      repeats: int = REPEATS, threads: int | None = None) -> list[Result]:
    """Check one provider's every mode, then time what agreed."""
    checked = _check_provider(case, provider, wl, gold, modes, ident)
    _measure(checked, wl, ident, ceilings, repeats, threads)
    return [r for r, _ in checked]


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


def _identity_columns(ident: DeviceIdentity) -> dict:
    d = ident.as_dict()
    d["device_kind"], d["device"] = d.pop("kind"), d.pop("name")
    return d


def rows_for(result: Result, ident: DeviceIdentity, run_id: str, timestamp: str) -> list[dict]:
    """The store rows of one result: agreement always; time, throughput, share of peak and memory only
    for a result that agreed and was measured."""
    case = result.case
    base = {"run_id": run_id, "timestamp": timestamp, "suite": case.suite, "case": case.name, "size": case.size,
            "shape": case.shape_text(), "x": case.x, "provider": result.provider, "mode": result.mode,
            "dtype": result.dtype, "agreement": result.agreement, "agrees": result.agrees, "note": result.note,
            "gold": result.gold, **_identity_columns(ident)}
    if result.status not in ("measured", "interpreted", "disagrees"):
        return []
    rows = [{**base, "metric": "agreement", "unit": "error/allowed",
             **_quantile_columns(Quantiles.constant(result.agreement)), "samples": 1}]
    if result.status != "measured":
        return rows
    timed = {**base, "threads": result.threads, "load_before": result.load[0], "load_after": result.load[1],
             "flags": result.flags}
    rows.append({**timed, "metric": "time", "unit": "ms", **_quantile_columns(result.time_ms),
                 "samples": result.samples, "repeats": ";".join(repr(float(m)) for m in result.repeats)})
    if result.graph_ms is not None:
        rows.append({**timed, "metric": "time_cudagraph", "unit": "ms", **_quantile_columns(result.graph_ms),
                     "samples": 1, "note": "do_bench_cudagraph replay (no launch overhead)"})
    rate_metric = "tflops" if result.rate_unit == "TFLOP/s" else "gbps"
    rows.append({**timed, "metric": rate_metric, "unit": result.rate_unit, **_quantile_columns(result.rate),
                 "samples": result.samples})
    if not math.isnan(result.share):
        rows.append({**timed, "metric": "peak_share", "unit": "%", "note": result.share_source,
                     **_quantile_columns(Quantiles.constant(result.share)), "samples": result.samples})
    rows.append({**timed, "metric": "memory", "unit": "bytes", "note": result.memory_note,
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
        ceilings: dict | None = None, repeats: int = REPEATS, threads: int | None = None,
        extra_providers=()) -> RunReport:
    """Check, benchmark and store; returns what was measured (the CLI prints :func:`format_summary` of it).

    ``progress``: show a progress bar on stderr (a terminal only). ``repeats``: interleaved timing rounds
    per case. ``threads``: torch CPU threads while timing (default: torch's current count). ``extra_providers``:
    providers to run besides the discovered ones (a user's own implementation, or a test's).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
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
        known = providers(suite) + [p for p in extra_providers if p.suite == suite]
        chosen = [p for p in known if provider_names is None or p.name in provider_names]
        reference = next(p for p in known if p.name == "reference")
        names = [n for n in catalog.names(suite) if case_names is None or n in case_names]
        plan += [(name, chosen, reference) for name in names]
    step = progress_bar(sum(1 + len(chosen) for _, chosen, _ in plan)) if progress else None
    try:
        _run_plan(plan, report, modes, torch_dtype, dtype, ident, store, step, ceilings, timestamp, repeats,
                  threads)
    finally:
        if step:
            step.close()
    return report


def _run_plan(plan, report, modes, torch_dtype, dtype, ident, store, progress, ceilings, timestamp, repeats,
              threads) -> None:
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
        checked = []
        for provider in chosen:
            if progress:
                progress(f"{name}: {provider.name}")
            checked += _check_provider(case, provider, wl, gold, modes, ident)
        _measure(checked, wl, ident, ceilings, repeats, threads)  # interleaved across providers and modes
        case_results = [r for r, _ in checked]
        report.results += case_results
        if store is not None:
            rows = [row for r in case_results for row in rows_for(r, ident, report.run_id, timestamp)]
            path = store.append(rows)
            if path is not None:
                report.stored.append(path)


def run_one(case_name: str, provider: Provider, reference: Provider, mode: str, dtype: str, ident: DeviceIdentity,
            *, repeats: int = REPEATS, threads: int | None = None) -> list[Result]:
    """One task of a distributed plan (:mod:`fusebench.cluster`): ``case_name`` on ``provider`` in one
    ``mode``, checked against its own gold and timed in ``repeats`` rounds, as :func:`run` does per case."""
    case = catalog.for_device(case_name, ident.kind)
    try:
        wl = make_workload(case, ident.kind, getattr(torch, dtype))
        gold = _gold(case, wl, reference, mode != "forward")
    except Unavailable as error:
        return [Result(case, provider.name, mode, dtype, "n/a", note=str(error))]
    return _measure_provider(case, provider, wl, gold, (mode,), ident, {}, repeats, threads)


def _format_rate(r: Result) -> str:
    return f"{r.rate.p50:.3g} {r.rate_unit}" if r.rate else ""


def format_summary(report: RunReport) -> str:
    """The table `fusebench run` prints, and the notes that say how to read it."""
    header = (f"{'case':<18} {'provider':<15} {'mode':<17} {'dtype':<9} {'agrees':<9} {'ratio':>9} "
              f"{'p50 ms':>11} {'p20-p80 ms':>17} {'throughput':>15} {'peak mem':>10} {'% peak':>7}  flags")
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
        time_text, spread, rate, memory, share, flags = "", "", "", "", "", ""
        if r.status == "interpreted":
            time_text = "interpreted"
        elif r.status == "disagrees":
            time_text = "not timed"
        else:
            time_text = f"{r.time_ms.p50:.4g}"
            spread = f"{r.time_ms.p20:.3g}-{r.time_ms.p80:.3g}"
            rate, memory = _format_rate(r), f"{r.memory / 2**20:.2f} MB"
            share = "" if math.isnan(r.share) else f"{r.share:.1f}"
            flags = ("IMPLAUSIBLE " if r.implausible else "") + ("oversubscribed" if r.oversubscribed else "")
        lines.append(f"{r.case.name:<18} {r.provider:<15} {r.mode:<17} {r.dtype:<9} {agrees:<9} {r.agreement:>9.3g} "
                     f"{time_text:>11} {spread:>17} {rate:>15} {memory:>10} {share:>7}  {flags}".rstrip())
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
    """A case on one provider, ready to time: ``call()`` runs one ``mode`` step, the step that
    :meth:`agreement` checks."""

    case: catalog.AttentionCase | catalog.GraphCase
    provider: Provider
    mode: str
    workload: Workload
    call: object
    interpreted: bool  # a Triton kernel under the Triton interpreter: check agreement, never time it

    def agreement(self):
        """The worst verdict of what ``call()`` returns: the whole output (forward), every input gradient."""
        reference = next(p for p in providers(self.case.suite) if p.name == "reference")
        gold = _gold(self.case, self.workload, reference, self.mode != "forward")
        out, grads = _split(self.mode, self.call())
        return max(_verdicts(gold, list(self.workload.inputs), out, grads, self.provider.name),
                   key=lambda v: v.ratio)

    def work(self) -> tuple[float, str]:
        """(FLOPs or bytes of one call, "TFLOP/s" or "GB/s")."""
        rate, unit = _rate(self.case, self.mode, self.workload, Quantiles.constant(1e3))
        return rate.p50 * (1e12 if unit == "TFLOP/s" else 1e9), unit


def prepare(case_name: str, provider_name: str, mode: str, *, device: str | None = None,
            dtype: str | None = None, extra_providers=()) -> Prepared:
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
    known = providers(case.suite) + [p for p in extra_providers if p.suite == case.suite]
    provider = next((p for p in known if p.name == provider_name), None)
    if provider is None:
        raise NotImplementedError(f"provider {provider_name!r} is not available here")
    interpreted = provider.triton and interpreting_triton()
    if provider.triton and not interpreted and not device.startswith("cuda"):
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
