"""`fusebench run --cluster`: the run's plan as Ray tasks, one GPU each; rows come back to the driver.

The plan of a run is a list of independent tasks, one per (case, provider, mode, dtype) (:func:`plan`).
On a cluster each task is a Ray task that asks for one GPU (``num_gpus=1``; ``gpu_type`` adds Ray's
accelerator type, so a task lands only on a node whose GPUs are of that model). The task checks and
times its one (case, provider, mode) on the node that runs it (:func:`fusebench.runner.run_one`), with
that node's device identity, and returns its rows; the driver appends the rows to its local store as
they arrive (one atomic file per batch of tasks that came back together,
:meth:`fusebench.store.ResultsStore.append`). No shared
filesystem is needed: the store is the only place results meet.

What Ray does, not this module: scheduling (resources, accelerator types), moving arguments and rows,
and retrying a task whose worker died (``max_retries``; a Python exception inside a task is not
retried: the runner already turns a provider's exception into an "error" result).

Faults:

* a task whose worker keeps dying (or that raises outside the runner) is reported with its error as an
  "error" result once Ray gives up, and the run goes on;
* every row carries its key (run id, case, provider, mode, dtype, and the ``node`` and ``gpu`` that ran
  it); the driver stores each task's rows once, and ``resume`` skips tasks whose rows are stored;
* Ctrl-C (or a lost driver) keeps every row already appended; the rest of the plan is cancelled and
  :func:`run` with ``resume=RUN_ID`` runs only the tasks with no stored rows. A task whose result is
  "n/a" or "error" stores no row, so a resumed run tries it again.

The device ceilings (measured bandwidth and matmul peaks) are not measured on a cluster; a GPU row's
share of peak is then taken from the spec sheet.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from fusebench import cases as catalog
from fusebench.store import ResultsStore, new_run_id

__all__ = ["Task", "ClusterReport", "plan", "run", "connect", "completed", "MAX_RETRIES", "missing_ray",
           "gpu_of_worker"]

# A task whose worker died is tried again this many times (Ray's max_retries): a lost node or an
# out-of-memory kill is worth a second try; a task that kills every worker it meets is not worth ten.
MAX_RETRIES = 2
# Ready tasks are collected in batches so that a plan of thousands of tasks is not rescanned per result.
_WAIT_BATCH = 64


def missing_ray() -> str | None:
    """Why the cluster path cannot run here (None when ray imports)."""
    try:
        import ray  # noqa: F401
    except ImportError as error:
        return f"ray is not installed ({error}); install the extra: pip install 'fusebench[cluster]'"
    return None


@dataclass(frozen=True)
class Task:
    """One entry of a run's plan. ``dtype`` None: the node's default (bfloat16 on a GPU, float32 on a CPU)."""

    suite: str
    case: str
    provider: str
    mode: str
    dtype: str | None

    def done_by(self, row: dict) -> bool:
        """Whether a stored row is one of this task's."""
        return (row["case"], row["provider"], row["mode"]) == (self.case, self.provider, self.mode) and (
            self.dtype is None or row["dtype"] == self.dtype)


@dataclass
class Outcome:
    """What a task returns to the driver: its results (for the summary) and its store rows."""

    task: Task
    node: str
    gpu: str
    identity: object  # fusebench.device.DeviceIdentity of the node
    results: list
    rows: list


@dataclass
class ClusterReport:
    run: object  # fusebench.runner.RunReport (its identity: the first node that answered)
    planned: int = 0
    skipped: int = 0  # tasks of a resumed run whose rows were already stored
    per_node: Counter = field(default_factory=Counter)  # tasks finished per "node gpu-type"
    failed: list = field(default_factory=list)  # (Task, error text): tasks Ray gave up on
    interrupted: bool = False
    seconds: float = 0.0

    def format(self) -> str:
        lines = [f"cluster: {self.planned} task(s) planned, {self.skipped} already stored (resumed), "
                 f"{sum(self.per_node.values())} finished in {self.seconds:.1f} s"]
        lines += [f"  {node}: {count} task(s)" for node, count in sorted(self.per_node.items())]
        lines += [f"  FAILED {t.case} {t.provider} {t.mode}: {error}" for t, error in self.failed]
        if self.interrupted:
            lines.append(f"INTERRUPTED: the rows already returned are stored; run the rest with "
                         f"--resume {self.run.run_id}")
        return "\n".join(lines)


def plan(*, suites=("attention", "graph"), case_names=None, provider_names=None, modes=catalog.MODES,
         dtype: str | None = None, extra_providers=()) -> tuple[list[Task], dict[str, str]]:
    """(the tasks, {suite: why it is absent}): every case x chosen provider x mode, in catalog order."""
    from fusebench.providers import graph_suite_missing, providers

    tasks, missing = [], {}
    for suite in suites:
        why = graph_suite_missing() if suite == "graph" else None
        if why:
            missing[suite] = why
            continue
        known = providers(suite) + [p for p in extra_providers if p.suite == suite]
        chosen = [p.name for p in known if provider_names is None or p.name in provider_names]
        names = [n for n in catalog.names(suite) if case_names is None or n in case_names]
        tasks += [Task(suite, name, provider, mode, dtype) for name in names for provider in chosen for mode in modes]
    return tasks, missing


def completed(store: ResultsStore, run_id: str, tasks: list[Task]) -> set[Task]:
    """The tasks of ``run_id`` whose rows are already in ``store``."""
    frame = store.read().frame
    rows = frame[frame["run_id"] == run_id][["case", "provider", "mode", "dtype"]].drop_duplicates()
    stored = rows.to_dict("records")
    return {t for t in tasks if any(t.done_by(row) for row in stored)}


def connect(address: str, *, gpus: int | None = None) -> None:
    """Join the Ray cluster at ``address``, or start one on this machine for ``"local"``.

    ``local`` declares this machine's CUDA devices as its GPUs; a machine without one declares ``gpus``
    logical GPUs (default 1: one task at a time, so CPU timings do not share cores). A Ray already
    initialised in this process (a test's) is used as it is.
    """
    import ray

    if ray.is_initialized():
        return
    if address == "local":
        import torch

        count = torch.cuda.device_count() or (gpus or 1)
        # address="local": a private instance, never a `ray start` cluster that happens to run on this machine
        ray.init(address="local", num_gpus=count, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


@functools.cache
def _node_identity(visible_devices: str | None):
    """This worker's device identity (cached per worker process and visible GPU set)."""
    from fusebench.device import identity

    return identity()


def _execute(task: Task, run_id: str, timestamp: str, repeats: int, threads: int | None,
             extra_providers: tuple) -> Outcome:
    """The body of one Ray task, on the node that runs it: its device, its identity, its rows."""
    import ray

    from fusebench.device import emulate_triton_without_gpu

    emulate_triton_without_gpu()  # before any kernel module is imported on this worker
    from fusebench import runner
    from fusebench.providers import providers

    context = ray.get_runtime_context()
    node = f"{os.uname().nodename}/{context.get_node_id()[:8]}"
    gpu = ",".join(str(g) for g in ray.get_gpu_ids())
    ident = _node_identity(os.environ.get("CUDA_VISIBLE_DEVICES"))
    dtype = task.dtype or ("bfloat16" if ident.kind == "cuda" else "float32")
    known = providers(task.suite) + [p for p in extra_providers if p.suite == task.suite]
    provider = next((p for p in known if p.name == task.provider), None)
    case = catalog.for_device(task.case, ident.kind)
    if provider is None:
        results = [runner.Result(case, task.provider, task.mode, dtype, "n/a",
                                 note=f"provider {task.provider!r} is not available on node {node}")]
    else:
        reference = next(p for p in known if p.name == "reference")
        results = runner.run_one(task.case, provider, reference, task.mode, dtype, ident, repeats=repeats,
                                 threads=threads)
    rows = [row | {"node": node, "gpu": gpu} for r in results for row in runner.rows_for(r, ident, run_id, timestamp)]
    return Outcome(task, node, gpu, ident, results, rows)


def run(address: str, *, suites=("attention", "graph"), case_names=None, provider_names=None,
        modes=catalog.MODES, dtype: str | None = None, store: ResultsStore | None, gpu_type: str | None = None,
        resume: str | None = None, repeats: int = 3, threads: int | None = None, extra_providers=(),
        max_retries: int = MAX_RETRIES, progress: bool = True) -> ClusterReport:
    """Run the plan as Ray tasks on the cluster at ``address`` (``"local"``: start one here).

    ``resume``: the run id of an earlier, interrupted run; only its tasks with no stored rows run, and
    their rows join that run. ``gpu_type``: Ray's accelerator type (``"H100"``) each task requires.
    """
    import ray

    from fusebench.runner import Result, RunReport

    if resume is not None and store is None:
        raise ValueError("resume needs a store: it runs the tasks whose rows the store lacks")
    tasks, missing = plan(suites=suites, case_names=case_names, provider_names=provider_names, modes=modes,
                          dtype=dtype, extra_providers=extra_providers)
    report = ClusterReport(RunReport(identity=None, run_id=resume or new_run_id()), planned=len(tasks))
    report.run.missing_suites.update(missing)
    if resume is not None:
        done = completed(store, resume, tasks)
        tasks = [t for t in tasks if t not in done]
        report.skipped = len(done)
    connect(address)
    options = {"num_gpus": 1, "max_retries": max_retries, "retry_exceptions": False}
    if gpu_type:
        options["accelerator_type"] = gpu_type
    remote = ray.remote(_execute).options(**options)
    timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    started = time.perf_counter()
    pending = {remote.remote(t, report.run.run_id, timestamp, repeats, threads, tuple(extra_providers)): t
               for t in tasks}
    stored: set[Task] = set()
    returned: list = []  # rows of the tasks that came back in one wait, stored as one file
    bar = _bar(len(tasks)) if progress else None
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=min(len(pending), _WAIT_BATCH), timeout=0.5)
            returned = []
            for ref in ready:
                task = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as error:  # Ray gave up: the worker kept dying, or the task raised
                    text = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}"
                    report.failed.append((task, text))
                    case = catalog.get(task.case)
                    report.run.results.append(Result(case, task.provider, task.mode, task.dtype or "", "error",
                                                     note=f"{text} (after {max_retries} retries)"))
                    _advance(bar, report, "failed")
                    continue
                if task in stored:  # a task's rows are stored once, whatever Ray delivers
                    continue
                stored.add(task)
                returned += outcome.rows
                report.run.identity = report.run.identity or outcome.identity
                report.run.results += outcome.results
                _advance(bar, report, f"{outcome.node} gpu {outcome.gpu or '-'}")
            returned = _append(store, returned, report)
    except KeyboardInterrupt:
        report.interrupted = True
        for ref in pending:
            ray.cancel(ref, force=True)
        _append(store, returned, report)  # what came back before Ctrl-C is kept
    finally:
        if bar is not None:
            bar.close()
        report.seconds = time.perf_counter() - started
    return report


def _append(store: ResultsStore | None, rows: list, report: ClusterReport) -> list:
    """Store the rows that came back in one wait as one file: the driver's cost is per file (an fsync and
    a rename; docs/scale.md), so a batch of tasks per file keeps up with a larger fleet."""
    if store is not None and rows:
        report.run.stored.append(store.append(rows))
    return []


def _bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, disable=None, unit="task", leave=False)


def _advance(bar, report: ClusterReport, where: str) -> None:
    report.per_node[where] += 1
    if bar is not None:
        bar.set_postfix_str(", ".join(f"{n}: {c}" for n, c in sorted(report.per_node.items()))[-80:])
        bar.update(1)


def gpu_of_worker(worker: str | None, visible: str | None, count: int) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` for pytest-xdist worker ``worker`` (``"gw3"``): one GPU per worker,
    round-robin over the GPUs the run may use (``visible``, the variable as it is, or else ``count``).

    None leaves the variable as it is: not an xdist worker, no GPU, or already narrowed to one GPU.
    """
    if not worker or not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        devices = [str(i) for i in range(count)]
    if len(devices) <= 1:
        return None
    return devices[int(worker[2:]) % len(devices)]
