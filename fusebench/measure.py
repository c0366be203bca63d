"""Checking and measuring one case's providers: agreement gates every figure.

For each mode the very function that will be timed (forward under no_grad; backward of a stored forward;
both) is called once and judged (:mod:`fusebench.gold`); whole models are judged by
:meth:`fusebench.integrations.benchmarks.PreparedModel.agreement`. A result that disagrees keeps its verdict and
ratio and gets **no** time, throughput or memory figure. What agreed is timed with :mod:`fusebench.metrics`
(on the CPU torch's ``blocked_autorange`` with an explicit thread count and the load average around it; on a
GPU ``do_bench``) in ``repeats`` rounds interleaved across the case's providers and modes, so one run holds
independent repetitions that `fusebench compare` can test. A figure faster than 0.9x its roofline bound, or
above 100% of the device's spec-sheet peak, is marked implausible with the reason. A Triton kernel under the
interpreter (TRITON_INTERPRET as Triton reads it, on any device) is a numpy emulation: it gets its agreement
checked and no time, memory or throughput, ever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fusebench import cases as catalog
from fusebench import roofline
from fusebench.device import DeviceIdentity, interpreting_triton
from fusebench.gold import Gold, forward_and_grads, split, verdicts
from fusebench.metrics import Quantiles, Timing, peak_memory, spec_peak, throughput, timing
from fusebench.providers import Provider, Unavailable, Workload

__all__ = ["Result", "INTERPRETER_NOTE", "REPEATS", "PLAUSIBLE_SHARE_OF_BOUND", "triton_gate", "mode_function",
           "check_provider", "check_model", "measure", "measure_provider", "plausibility"]

INTERPRETER_NOTE = ("interpreted: the Triton interpreter emulates the kernel on the CPU (numpy); "
                    "agreement only, its time is not a kernel time")
# The interpreter runs a kernel's every program in Python: keep it to cases it finishes in seconds.
INTERPRETER_FLOPS = 3.5e7  # attention forward FLOPs: bert-base-128/256, clip-text-77, varlen-mixed (CPU sizes)
# graphs: edges x features. The interpreter runs ~10 ms per program and graph kernels launch one program
# per row segment and feature tile, so even cora-like (2.7k rows, 8 GAT heads) took minutes to emulate:
# graph catalog cases are not emulated; suites/correctness checks the graph kernels on small graphs.
INTERPRETER_GATHERS = 2e5
# Interleaved timing rounds per case: three independent repetitions in one run are the fewest from which
# `fusebench compare` flags a change.
REPEATS = 3
# A time below this share of the roofline lower bound cannot be real (the bound is already the hardware's
# limit; 10% covers spec-sheet rounding and boost clocks).
PLAUSIBLE_SHARE_OF_BOUND = 0.9
# The rate each suite reports, and the store's metric name for it.
RATE_METRICS = {"TFLOP/s": "tflops", "GB/s": "gbps", "tokens/s": "tokens_per_s"}


@dataclass
class Result:
    """One (case, provider, mode): its agreement and, when it agreed and was timed, its measurements."""

    case: catalog.AttentionCase | catalog.GraphCase | catalog.ModelCase
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
    rate: Quantiles | None = None  # TFLOP/s, GB/s or tokens/s; None where the case has no work model
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


def _interpreter_too_large(case) -> bool:
    if isinstance(case, catalog.AttentionCase):
        return case.flops("forward") > INTERPRETER_FLOPS
    if isinstance(case, catalog.GraphCase):
        return case.num_edges * case.features > INTERPRETER_GATHERS
    return False  # a model's CPU-sized variant is tiny: two layers of width 64


def triton_gate(case, device: str) -> tuple[bool, str]:
    """For a Triton provider on ``case`` on ``device``: (interpreted, why it does not run here; "" when it does).

    Every entry point (the run, the asv and pytest-benchmark suites, whole models) asks this one question."""
    interpreted = interpreting_triton()
    if not interpreted and not str(device).startswith("cuda"):
        return False, "Triton kernels need CUDA, or TRITON_INTERPRET=1 to emulate"
    if interpreted and _interpreter_too_large(case):
        return True, "too large for the Triton interpreter; agreement is checked on smaller cases"
    return interpreted, ""


def mode_function(fn, wl: Workload, mode: str):
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


def check_provider(case, provider: Provider, wl: Workload, gold: Gold, modes, ident) -> list[tuple]:
    """[(Result, the function to time or None)] per mode: each mode's timed function, checked once."""
    dtype = str(wl.dtype).removeprefix("torch.")
    result = lambda mode, status, **kw: Result(case, provider.name, mode, dtype, status, **kw)
    interpreted, why_not = triton_gate(case, ident.kind) if provider.triton else (False, "")
    if why_not:
        return [(result(m, "n/a", note=why_not), None) for m in modes]
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
                emulated = emulated or forward_and_grads(fn, wl, any(m != "forward" for m in modes))
                timed = None
                out, grads = (emulated[0] if mode != "backward" else None), (emulated[1] if mode != "forward"
                                                                            else None)
            else:
                timed = mode_function(fn, wl, mode)
                out, grads = split(mode, timed())
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
        worst = max(verdicts(gold, list(wl.inputs), out, grads, provider.name), key=lambda v: v.ratio)
        status = "interpreted" if interpreted else ("measured" if worst.passed else "disagrees")
        note = INTERPRETER_NOTE if interpreted else ("" if worst.passed else worst.describe())
        r = result(mode, status, agreement=worst.ratio, agrees=worst.passed, gold=gold.description, note=note)
        checked.append((r, timed if status == "measured" else None))
    return checked


def check_model(case: catalog.ModelCase, provider: str, ident: DeviceIdentity, dtype: str) -> list[tuple]:
    """[(Result, the function to time or None)] of a whole model's task on one provider, judged against the
    float64 eager model (:mod:`fusebench.integrations.benchmarks`)."""
    from fusebench.integrations.benchmarks import GOLD_DESCRIPTION, prepare_model

    result = lambda status, **kw: Result(case, provider, case.task, dtype, status, **kw)
    try:
        prepared = prepare_model(case.name, provider, device=ident.kind, dtype=dtype, size=case.size)
        verdict, note = prepared.agreement()
    except NotImplementedError as error:
        return [(result("n/a", note=str(error)), None)]
    except Exception as error:  # a provider that crashes is reported, and the run goes on
        return [(result("error", note=f"{type(error).__name__}: {error}"), None)]
    status = "interpreted" if prepared.interpreted else ("measured" if verdict.passed else "disagrees")
    notes = [note, INTERPRETER_NOTE if prepared.interpreted else "", "" if verdict.passed else verdict.describe()]
    r = result(status, agreement=verdict.ratio, agrees=verdict.passed, gold=GOLD_DESCRIPTION,
               note="; ".join(filter(None, notes)))
    return [(r, prepared.call if status == "measured" else None)]


def _rate(case, mode: str, wl: Workload | None, time_ms: Quantiles) -> tuple[Quantiles | None, str]:
    if isinstance(case, catalog.AttentionCase):
        return throughput(case.flops(mode), time_ms, 1e12), "TFLOP/s"
    if isinstance(case, catalog.GraphCase):
        edges = int(wl.context["edge_index"].shape[1])
        moved = case.bytes_moved(mode, value_bytes=wl.dtype.itemsize, index_bytes=8, num_edges=edges)
        return throughput(moved, time_ms, 1e9), "GB/s"
    if case.task == "generate":  # tokens generated per second; a forward pass has no work model here
        return throughput(case.batch * case.new_tokens, time_ms, 1.0), "tokens/s"
    return None, ""


def _share(ident: DeviceIdentity, unit: str, dtype: str, rate: float, ceilings: dict) -> tuple[float, str]:
    """Percent of the device's peak, preferring a ceiling measured on the device over the spec sheet."""
    if ident.kind != "cuda" or unit not in ("TFLOP/s", "GB/s"):
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
    it, or a wrong device table. No peak (a CPU, an unknown GPU) or no roofline (a whole model): nothing to
    judge against.
    """
    if peak is None:
        return ""
    try:
        limit = roofline.bound(case, mode, dtype, peak)
    except ValueError:  # a dtype the table has no peak for, or a case without a roofline
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


def measure(checked: list[tuple], ident: DeviceIdentity, *, device: str, workload: Workload | None = None,
            ceilings: dict | None = None, repeats: int = REPEATS, threads: int | None = None) -> None:
    """Time every checked, agreeing function in ``repeats`` interleaved rounds on ``device``; fill in its
    figures. ``workload``: the op-level case's tensors (its graph's edge count sets the bytes moved)."""
    ceilings = ceilings or {}
    timed = [(r, fn) for r, fn in checked if fn is not None]
    rounds: dict[int, list[Timing]] = {id(r): [] for r, _ in timed}
    for round_number in range(repeats):
        for r, fn in timed:  # the agreement check was the first call: the first round needs no other warm-up;
            # a launch-bound GPU call's CUDA-graph figure is taken in the first round only
            rounds[id(r)].append(timing(fn, device, num_threads=threads, warmup=False,
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
        r.memory, r.memory_note = peak_memory(fn, device)
        r.rate, r.rate_unit = _rate(r.case, r.mode, workload, r.time_ms)
        if r.rate is not None:
            r.share, r.share_source = _share(ident, r.rate_unit, r.dtype, r.rate.p50, ceilings)
            r.implausible = plausibility(r.case, r.mode, r.dtype, r.time_ms.p50, r.rate.p50, r.rate_unit, peak)


def measure_provider(case, provider: Provider, wl: Workload, gold: Gold, modes, ident, ceilings=None,
                     repeats: int = REPEATS, threads: int | None = None) -> list[Result]:
    """Check one provider's every mode, then time what agreed."""
    checked = check_provider(case, provider, wl, gold, modes, ident)
    measure(checked, ident, device=wl.device, workload=wl, ceilings=ceilings, repeats=repeats, threads=threads)
    return [r for r, _ in checked]
