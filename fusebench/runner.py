"""`fusebench run`: every case on every provider that can run it here, checked, then measured and stored.

For each case (the real size on a GPU, the CPU-sized variant on a CPU) and dtype, in every suite of the
catalog (``attention`` and ``graph``, one op each; ``models``, whole models):

1. **Agreement gates every figure** (:mod:`fusebench.gold`, :func:`fusebench.measure.check_provider`; whole
   models: :func:`fusebench.measure.check_model`): the very function that will be timed is called once and
   judged against the gold; a result that disagrees is stored with its verdict and ratio and **no** time,
   throughput or memory figure.
2. **Speed and memory** of what agreed (:func:`fusebench.measure.measure`): interleaved rounds across the
   case's providers, load average and threads recorded, implausible figures marked; a Triton kernel under
   the interpreter is checked and never timed.
3. **Rows** for the results store (:mod:`fusebench.rows`): one per (case, provider, mode, metric), appended
   once per case so a crash keeps the cases already measured.
4. **The table** `fusebench run` prints (:mod:`fusebench.summary`).

:func:`prepare` serves the asv and pytest-benchmark suites: one (case, provider, mode) at a time, checked by
the same gold and gate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from fusebench import cases as catalog
from fusebench.device import DeviceIdentity, default_dtype
from fusebench.gold import compute_gold, gold_precision, split, verdicts
from fusebench.measure import (
    INTERPRETER_NOTE,
    REPEATS,
    Result,
    _rate,
    check_model,
    check_provider,
    measure,
    measure_provider,
    mode_function,
    plausibility,
    triton_gate,
)
from fusebench.metrics import Quantiles
from fusebench.providers import Provider, Unavailable, Workload, graph_suite_missing, make_workload, providers
from fusebench.rows import ceiling_rows, identity_columns, rows_for
from fusebench.store import ResultsStore, new_run_id
from fusebench.summary import format_summary, progress_bar

__all__ = ["Result", "RunReport", "run", "run_one", "prepare", "Prepared", "format_summary", "rows_for",
           "ceiling_rows", "INTERPRETER_NOTE", "REPEATS", "plausibility", "gold_precision"]

_identity_columns = identity_columns  # the name fusebench.inspect and fusebench.mutants import


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


@dataclass
class _Run:
    """What every case of one run shares."""

    report: RunReport
    modes: tuple
    dtype: str
    store: ResultsStore | None
    ceilings: dict
    timestamp: str
    repeats: int
    threads: int | None
    progress: object = None  # a progress_bar step, or None

    @property
    def ident(self) -> DeviceIdentity:
        return self.report.identity

    def step(self, description: str) -> None:
        if self.progress:
            self.progress(description)


def run(*, suites=catalog.OP_SUITES, case_names=None, provider_names=None, modes=catalog.MODES,
        dtype: str | None = None, ident: DeviceIdentity, store: ResultsStore | None, progress: bool = False,
        ceilings: dict | None = None, repeats: int = REPEATS, threads: int | None = None,
        extra_providers=()) -> RunReport:
    """Check, benchmark and store; returns what was measured (the CLI prints :func:`format_summary` of it).

    ``suites``: any of :data:`fusebench.cases.SUITES` (a whole model runs its own task: a ``forward`` case when
    ``forward`` is among ``modes``, a ``generate`` case always). ``progress``: show a progress bar on stderr (a
    terminal only). ``repeats``: interleaved timing rounds per case. ``threads``: torch CPU threads while timing
    (default: torch's current count). ``extra_providers``: providers to run besides the discovered ones (a user's
    own implementation, or a test's).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    unknown = [s for s in suites if s not in catalog.SUITES]
    if unknown:
        raise ValueError(f"suites must be among {catalog.SUITES}, got {unknown}")
    report = RunReport(ident, new_run_id())
    context = _Run(report, tuple(modes), dtype or default_dtype(ident.kind), store, ceilings or {},
                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), repeats, threads)
    if store is not None and context.ceilings:
        report.stored.append(store.append(ceiling_rows(context.ceilings, ident, report.run_id, context.timestamp)))
    plan = _plan(suites, case_names, provider_names, modes, extra_providers, report)
    context.progress = progress_bar(sum(1 + len(chosen) for _, chosen, _ in plan)) if progress else None
    try:
        for name, chosen, reference in plan:
            _run_case(name, chosen, reference, context)
    finally:
        if context.progress:
            context.progress.close()
    return report


def _plan(suites, case_names, provider_names, modes, extra_providers, report: RunReport) -> list[tuple]:
    """[(case name, the providers to run it on, the reference that gives its gold)] in catalog order. A whole
    model's providers are names (its gold is the float64 eager model), op-level ones :class:`Provider`."""
    from fusebench.integrations.benchmarks import model_providers

    plan = []
    for suite in suites:
        missing = graph_suite_missing() if suite == "graph" else None
        if missing:
            report.missing_suites[suite] = missing
            continue
        names = [n for n in catalog.names(suite) if case_names is None or n in case_names]
        if suite == "models":
            names = [n for n in names if catalog.get(n).task == "generate" or catalog.get(n).task in modes]
            plan += [(n, [p for p in model_providers(catalog.get(n)) if provider_names is None or p in provider_names],
                      None) for n in names]
            continue
        known = providers(suite) + [p for p in extra_providers if p.suite == suite]
        chosen = [p for p in known if provider_names is None or p.name in provider_names]
        reference = next(p for p in known if p.name == "reference")
        plan += [(name, chosen, reference) for name in names]
    return plan


def _run_case(name: str, chosen: list, reference: Provider | None, run: _Run) -> None:
    """Check every chosen provider on one case, time what agreed (interleaved), store the case's rows."""
    case = catalog.for_device(name, run.ident.kind)
    run.step(f"{name}: gold")
    workload = None
    if case.suite == "models":
        checked = []
        for provider in chosen:
            run.step(f"{name}: {provider}")
            checked += check_model(case, provider, run.ident, run.dtype)
    else:
        try:
            workload = make_workload(case, run.ident.kind, getattr(torch, run.dtype))
            gold = compute_gold(case, workload, reference, any(m != "forward" for m in run.modes))
        except Unavailable as error:
            run.report.results.append(Result(case, "*", "*", run.dtype, "n/a", note=str(error)))
            return
        checked = []
        for provider in chosen:
            run.step(f"{name}: {provider.name}")
            checked += check_provider(case, provider, workload, gold, run.modes, run.ident)
    measure(checked, run.ident, device=run.ident.kind, workload=workload, ceilings=run.ceilings,
            repeats=run.repeats, threads=run.threads)  # interleaved across providers and modes
    case_results = [r for r, _ in checked]
    run.report.results += case_results
    if run.store is not None:
        rows = [row for r in case_results for row in rows_for(r, run.ident, run.report.run_id, run.timestamp)]
        path = run.store.append(rows)
        if path is not None:
            run.report.stored.append(path)


def run_one(case_name: str, provider: Provider, reference: Provider, mode: str, dtype: str, ident: DeviceIdentity,
            *, repeats: int = REPEATS, threads: int | None = None) -> list[Result]:
    """One task of a distributed plan (:mod:`fusebench.cluster`): ``case_name`` on ``provider`` in one
    ``mode``, checked against its own gold and timed in ``repeats`` rounds, as :func:`run` does per case."""
    case = catalog.for_device(case_name, ident.kind)
    try:
        wl = make_workload(case, ident.kind, getattr(torch, dtype))
        gold = compute_gold(case, wl, reference, mode != "forward")
    except Unavailable as error:
        return [Result(case, provider.name, mode, dtype, "n/a", note=str(error))]
    return measure_provider(case, provider, wl, gold, (mode,), ident, {}, repeats, threads)


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
        gold = compute_gold(self.case, self.workload, reference, self.mode != "forward")
        out, grads = split(self.mode, self.call())
        return max(verdicts(gold, list(self.workload.inputs), out, grads, self.provider.name),
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
    if case.suite not in catalog.OP_SUITES:
        raise ValueError(f"{case_name!r} is a whole-model case: fusebench.integrations.benchmarks.prepare_model "
                         "prepares those")
    missing = graph_suite_missing() if case.suite == "graph" else None
    if missing:
        raise NotImplementedError(f"graph suite absent: {missing}")
    known = providers(case.suite) + [p for p in extra_providers if p.suite == case.suite]
    provider = next((p for p in known if p.name == provider_name), None)
    if provider is None:
        raise NotImplementedError(f"provider {provider_name!r} is not available here")
    interpreted, why_not = triton_gate(case, device) if provider.triton else (False, "")
    if why_not:
        raise NotImplementedError(why_not)
    dtype = dtype or default_dtype(device)
    try:
        workload = make_workload(case, device, getattr(torch, dtype))
        fn = provider.build(case, workload)
        call = mode_function(fn, workload, mode)
        call()  # a provider that cannot run these inputs says so here
    except Unavailable as error:
        raise NotImplementedError(str(error)) from None
    return Prepared(case, provider, mode, workload, call, interpreted)
