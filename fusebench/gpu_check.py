"""`fusebench gpu-check OUT`: one call that validates a CUDA machine and brings every figure back in one file.

Made for a lent GPU machine that runs a bare checkout (``python3 -m fusebench gpu-check OUT``: no install,
no network) and returns at most a few files from OUT. Steps, each with a time budget (printed first, and
alone with ``--plan``; the sum leaves a 10-minute call a margin for start-up and packing) and a verdict
ok / failed / skipped with the reason:

1. ``environment``: device identity, software versions, which optional packages exist.
2. ``inspect``: `fusebench inspect --check --launches gpu` for the device's own compute capability (the
   compiled kernels' registers, spills, shared memory, tensor-core instructions, for the specializations
   the catalog's gpu-size cases launch), rows into the store.
3. ``correctness``: the ``gpu`` tier of every kernel at real sizes: ``pytest -m gpu`` over
   suites/correctness and suites/integrations with TRITON_INTERPRET=0, JUnit XML.
4. ``ceilings``: the measured bandwidth (1 GiB device-to-device copy) and matmul TFLOP/s per dtype
   (:func:`fusebench.metrics.measure_ceilings`), stored.
5. ``benchmarks``: a short grid of :data:`GRID` cases against every provider (`fusebench run`).
6. ``roofline``: the analytic bounds of the grid on this device (and H100/H200), and each measured
   time over its bound.
7. ``asv``: asv results for one attention and one graph case.

Every step runs in its own process with its budget as a timeout (a hung kernel cannot stall the
check) and writes into a private work folder: ``results/`` (a results store), ``asv/``, ``junit-gpu.xml``,
``gpu-check.log`` (every command and its output), ``summary.json`` and the steps' text files. At the end
that folder is packed into ``OUT/gpu-check.tar.gz`` (members under ``gpu-check/``, at most
:data:`ARCHIVE_LIMIT` bytes: the largest files are left out, and named, if it would be larger) and
``OUT/summary.md`` is written beside it; summary.md is also rewritten after every step, so a call cut
short still brings back how far it got.

Without CUDA (the dry run), the steps that need a GPU are skipped saying so, the others run, and the
command still fills OUT and exits 0. It exits 1 only when a step that ran failed. Nothing needs a
network: only torch, triton, pandas and pytest are required; asv and torch_geometric (PyG's provider)
are used when installed, and their steps or rows are skipped with the reason when not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The short benchmark grid: attention at BERT and decoder scale, varlen, and three graph aggregations.
GRID = ("bert-base-512", "bert-base-2048", "gpt-gqa-8k", "varlen-mixed", "gcn/arxiv-like", "gat/arxiv-like",
        "gcn/er-degree-32")
GRID_MODES = ("forward", "forward+backward")
# asv: one case per suite, every provider, forward (each asv benchmark is a process: keep it small).
ASV_BENCH = (r"AttentionSpeed\.track_tflops\(.bert-base-2048., .*, .forward.\)|"
             r"GraphSpeed\.track_gbps\(.gcn/arxiv-like., .*, .forward.\)")
OPTIONAL = ("asv", "torch_geometric", "flash_attn", "hypothesis", "pytest_benchmark")
TOTAL_BUDGET_S = 470  # under 8 minutes end to end, leaving a few seconds for start-up and the summary
DEVICE_CALL_S = 600  # the lent machine's longest command; the rest of it is the margin --plan prints
ARCHIVE = "gpu-check.tar.gz"
ARCHIVE_LIMIT = 16 * 2**20  # the largest file a device call brings back


class Skipped(Exception):
    """The step cannot run here; the message says why."""


class Failed(Exception):
    """The step ran and failed; the message says how."""


@dataclass
class StepResult:
    name: str
    status: str  # "ok", "failed" or "skipped"
    detail: str
    seconds: float
    budget_s: float


@dataclass
class Check:
    """What the steps share: the output folder, the log, whether CUDA is here."""

    out: Path
    cuda: bool
    capability: int = 0  # e.g. 90 for sm_90; 0 without CUDA
    deadline: float = 0.0
    log_lines: list[str] = field(default_factory=list)

    @property
    def results(self) -> Path:
        return self.out / "results"

    def log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        with open(self.out / "gpu-check.log", "a") as log:
            for line in text.rstrip("\n").splitlines() or [""]:
                log.write(f"[{stamp}] {line}\n")

    def require_cuda(self) -> None:
        if not self.cuda:
            raise Skipped("no CUDA device here (torch.cuda.is_available() is False)")

    def command(self, args: list[str], budget_s: float, *, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run ``args`` from the repository root within ``budget_s`` (and the overall deadline), logged."""
        timeout = max(1.0, min(budget_s, self.deadline - time.monotonic()))
        self.log(f"$ {' '.join(args)}   (timeout {timeout:.0f} s)")
        full_env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                    **(env or {})}
        try:
            done = subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            self.log(_text(error.stdout) + _text(error.stderr))
            raise Failed(f"over its time budget ({timeout:.0f} s)") from None
        self.log(done.stdout + done.stderr + f"exit status {done.returncode}")
        return done


def installed(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (a module blocked with
    ``sys.modules[name] = None`` makes find_spec raise ValueError: that is absent too)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


def step_environment(check: Check, budget_s: float) -> str:
    """Device identity, software versions and which optional packages are here."""
    from fusebench.device import identity

    ident = identity()
    present = {name: installed(name) for name in OPTIONAL}
    (check.out / "environment.json").write_text(json.dumps({"identity": ident.as_dict(), "optional": present},
                                                           indent=2) + "\n")
    missing = [name for name, here in present.items() if not here]
    return (f"{ident.label}; torch {ident.torch} (CUDA {ident.cuda or 'none'}), triton {ident.triton}; "
            f"optional missing: {', '.join(missing) or 'none'}")


def step_inspect(check: Check, budget_s: float) -> str:
    """`fusebench inspect --check` for the device's own compute capability (needs CUDA)."""
    if not check.cuda:
        raise Skipped("no CUDA device here, so no capability of its own to compile for "
                      "(`fusebench inspect --targets 80 90` compiles for those without a GPU)")
    # The specializations of the gpu-size cases (what the benchmarks step runs): recording every launch of the
    # catalog and compiling its specializations exceeds this step's budget; CI's gates compile them all.
    done = check.command(_python("-m", "fusebench.cli", "inspect", "--check", "--targets", str(check.capability),
                                 "--launches", "gpu", "--results", str(check.results)), budget_s)
    (check.out / "inspect.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise Failed(f"kernel gate failed for sm_{check.capability}: {_last_line(done.stderr)}")
    compiled = max(0, len(done.stdout.strip().splitlines()) - 2)
    return f"{compiled} kernel configurations compiled for sm_{check.capability}; gate passed"


def step_correctness(check: Check, budget_s: float) -> str:
    """The `gpu` tier: pytest -m gpu over suites/correctness and suites/integrations (needs CUDA)."""
    check.require_cuda()
    suites = [p for p in ("suites/correctness", "suites/integrations") if (ROOT / p).is_dir()]
    if not suites:
        raise Skipped("neither suites/correctness nor suites/integrations is in this checkout")
    junit = check.out / "junit-gpu.xml"
    # Our own addopts: the project's default deselects `gpu` and passes --benchmark-disable, which only
    # parses where pytest-benchmark is installed. A file that cannot be collected (an optional package
    # missing) fails the step, and the other files still run.
    done = check.command(_python("-m", "pytest", *suites, "-o", "addopts=", "-m", "gpu", "--strict-markers", "-ra",
                                 "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                                 f"--junitxml={junit}"), budget_s)
    summary = _last_line(done.stdout)
    if done.returncode == 5:
        raise Skipped(f"no gpu-marked tests collected in {', '.join(suites)}")
    if done.returncode != 0:
        missing = [name for name in ("hypothesis", "pytest_benchmark") if not installed(name)]
        hint = f" ({', '.join(missing)} not installed: tests that import it cannot run)" if missing else ""
        raise Failed(summary + hint)
    if " passed" not in summary:  # on a CUDA machine a gpu tier that only skips has checked nothing
        raise Failed(f"no gpu test ran: {summary} (reasons in the log)")
    return f"{summary} (JUnit XML: {junit.name})"


_CEILINGS_CODE = """
import json, sys, time
from fusebench.device import identity
from fusebench.metrics import measure_ceilings
from fusebench.runner import ceiling_rows
from fusebench.store import ResultsStore, new_run_id
ceilings = measure_ceilings(("bfloat16", "float16", "float32"))
stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
ResultsStore(sys.argv[1]).append(ceiling_rows(ceilings, identity(), new_run_id(), stamp))
print(json.dumps(ceilings))
"""


def step_ceilings(check: Check, budget_s: float) -> str:
    """Measured copy bandwidth and matmul TFLOP/s per dtype (needs CUDA)."""
    check.require_cuda()
    done = check.command(_python("-c", _CEILINGS_CODE, str(check.results)), budget_s)
    if done.returncode != 0:
        raise Failed(_last_line(done.stderr))
    ceilings = json.loads(done.stdout.strip().splitlines()[-1])
    (check.out / "ceilings.json").write_text(json.dumps(ceilings, indent=2) + "\n")
    return ", ".join(f"{key} {value:.4g}" for key, (value, _) in ceilings.items())


def step_benchmarks(check: Check, budget_s: float) -> str:
    """The short GRID of cases against every provider, `fusebench run` (needs CUDA)."""
    check.require_cuda()
    done = check.command(_python("-m", "fusebench.cli", "run", "--cases", *GRID, "--modes", *GRID_MODES,
                                 "--no-ceilings", "--results", str(check.results)), budget_s)
    (check.out / "benchmarks.txt").write_text(done.stdout)
    if done.returncode != 0:
        raise Failed(f"a provider disagreed or crashed (see benchmarks.txt); {_last_line(done.stderr)}")
    not_run = [line.removeprefix("not run here: ").split(":")[0] for line in done.stdout.splitlines()
               if line.startswith("not run here:")]
    return f"{len(GRID)} cases x {len(GRID_MODES)} modes; providers not run here: {', '.join(not_run) or 'none'}"


def step_roofline(check: Check, budget_s: float) -> str:
    """Analytic bounds of the grid, and each measured time over its bound."""
    from fusebench import roofline
    from fusebench.report import over_bound
    from fusebench.store import ResultsStore
    from fusebench.tables import text_table

    devices = ["H100 SXM5", "H200 SXM"]
    if check.cuda:
        import torch

        from fusebench.metrics import spec_peak

        own = spec_peak(torch.cuda.get_device_name())
        if own is not None and roofline.label(own) not in devices:
            devices.append(roofline.label(own))
    text = roofline.format_table(roofline.table(modes=GRID_MODES, devices=devices, case_names=GRID))
    frame = ResultsStore(check.results).read().frame
    times = frame[(frame["metric"] == "time") & frame["suite"].isin(["attention", "graph"])]
    lines = []
    for row in times.itertuples():
        ratio = over_bound((row.device, row.suite, row.case, row.size, row.provider, row.mode, row.dtype),
                           float(row.p50))
        if ratio == ratio:  # not NaN
            lines.append((row.case, row.provider, row.mode, f"{row.p50:.4g}", f"{ratio:.2f}x"))
    columns = ["case", "provider", "mode", "p50 ms", "over bound"]
    measured = f"\n\nmeasured p50 time over the bound on this device:\n{text_table(lines, columns)}" if lines else ""
    (check.out / "roofline.txt").write_text(text + measured + "\n")
    if lines:
        return f"{len(lines)} measured time(s) over their bound in roofline.txt"
    why = "no measured rows" if times.empty else "this device is not in the spec-sheet table"
    return f"bounds for {', '.join(devices)} in roofline.txt ({why} to compare)"


def step_asv(check: Check, budget_s: float) -> str:
    """asv results for one attention and one graph case (needs CUDA, asv and a git checkout)."""
    check.require_cuda()
    if not installed("asv"):
        raise Skipped("asv is not installed (carry its wheel: pip install --no-index asv-*.whl)")
    from fusebench.device import git_commit

    if git_commit()[0] == "unknown":
        raise Skipped("asv records results per commit, and this checkout is not a git repository")
    config = json.loads((ROOT / "asv.conf.json").read_text())
    config.update(repo=str(ROOT), benchmark_dir=str(ROOT / config["benchmark_dir"]),
                  results_dir=str(check.out / "asv"), html_dir=str(check.out / "asv-html"),
                  env_dir=str(check.out / "asv-env"))
    path = check.out / "asv.conf.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    code = ("import sys; from fusebench.dashboard import record; "
            "print(record(bench=sys.argv[1], config=sys.argv[2]))")
    done = check.command(_python("-c", code, ASV_BENCH, str(path)), budget_s,
                         env={"ASV_PYTHONPATH": str(ROOT), "FUSEBENCH_INSPECT_LIST": "cached"})
    if done.returncode != 0:
        raise Failed(_last_line(done.stderr) or _last_line(done.stdout))
    results = [p for p in (check.out / "asv").rglob("*.json") if p.name != "machine.json"]
    return f"{len(results)} asv result file(s) under asv/ (machine {_last_line(done.stdout)})"


# (name, budget in seconds, function): the budgets sum to TOTAL_BUDGET_S at most.
STEPS: tuple[tuple[str, float, Callable[[Check, float], str]], ...] = (
    ("environment", 15, step_environment),
    ("inspect", 60, step_inspect),
    ("correctness", 165, step_correctness),
    ("ceilings", 40, step_ceilings),
    ("benchmarks", 130, step_benchmarks),
    ("roofline", 15, step_roofline),
    ("asv", 45, step_asv),  # its benchmarks need no inspect rows: FUSEBENCH_INSPECT_LIST=cached skips listing them
)


# --------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------


def plan(steps=STEPS) -> str:
    """The steps in order with their budgets and what each does: what a call will spend, before it runs."""
    total = sum(budget for _, budget, _ in steps)
    lines = [f"fusebench gpu-check plan: {len(steps)} steps, {total:.0f} s of budgets (the check stops at "
             f"{TOTAL_BUDGET_S} s), leaving {DEVICE_CALL_S - TOTAL_BUDGET_S} s of a {DEVICE_CALL_S} s device call "
             f"for start-up and packing"]
    from fusebench.tables import text_table

    lines.append(text_table([(number, name, f"{budget:.0f}", (function.__doc__ or "").strip().split("\n")[0])
                             for number, (name, budget, function) in enumerate(steps, 1)],
                            ["", "step", "budget s", "what it does"]))
    lines.append(f"  then: pack everything into OUT/{ARCHIVE} (at most {ARCHIVE_LIMIT // 2**20} MiB) "
                 "beside OUT/summary.md")
    return "\n".join(lines)


class _Stopped(Exception):
    """SIGTERM (an outer `timeout`): stop the steps, still pack what there is."""


def _stop(signum, frame):
    raise _Stopped(f"stopped by signal {signum}")


def run(out, *, steps=STEPS, cuda: bool | None = None) -> list[StepResult]:
    """Run every step in a private work folder, then pack it into ``out``/gpu-check.tar.gz beside
    ``out``/summary.md; return the verdicts."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    capability = 0
    if cuda:
        major, minor = torch.cuda.get_device_capability()
        capability = 10 * major + minor
    work = Path(tempfile.mkdtemp(prefix="fusebench-gpu-check-"))
    check = Check(work, cuda, capability, deadline=time.monotonic() + TOTAL_BUDGET_S)
    check.log(f"fusebench gpu-check from {ROOT} into {out.resolve()}: "
              + (f"CUDA sm_{capability}" if cuda else "no CUDA: dry run, GPU steps skipped"))
    check.log(plan(steps))
    verdicts, stopped = [], False
    previous = signal.signal(signal.SIGTERM, _stop) if _main_thread() else None
    try:
        for name, budget_s, function in steps:
            check.log(f"== {name} (budget {budget_s:.0f} s)")
            start = time.monotonic()
            try:
                if time.monotonic() >= check.deadline:
                    raise Failed("not started: the check's total time budget is spent")
                status, detail = "ok", function(check, budget_s)
            except Skipped as why:
                status, detail = "skipped", str(why)
            except Failed as why:
                status, detail = "failed", str(why)
            except _Stopped as why:
                status, detail, stopped = "failed", str(why), True
            except Exception as error:  # noqa: BLE001 - a crashing step is a failed step; the others still run
                status, detail = "failed", f"{type(error).__name__}: {error}"
            seconds = time.monotonic() - start
            check.log(f"== {name}: {status} ({seconds:.1f} s): {detail}")
            verdicts.append(StepResult(name, status, detail, seconds, budget_s))
            _write_summary(out, verdicts, cuda, capability, pending=[n for n, _, _ in steps[len(verdicts):]])
            if stopped:
                break
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        (work / "summary.json").write_text(json.dumps({"cuda": cuda, "capability": capability,
                                                       "steps": [asdict(v) for v in verdicts]}, indent=2) + "\n")
        packed, left_out = pack(work, out / ARCHIVE)
        _write_summary(out, verdicts, cuda, capability, packed=packed, left_out=left_out)
        shutil.rmtree(work, ignore_errors=True)
    return verdicts


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def pack(work: Path, archive: Path, limit: int = ARCHIVE_LIMIT) -> tuple[list[str], list[str]]:
    """Pack ``work`` into ``archive`` (members under ``gpu-check/``) within ``limit`` bytes; when it would be
    larger, leave out the largest files one at a time. Returns the paths packed and those left out
    (relative to ``work``)."""
    files = sorted((p for p in work.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    left_out: list[str] = []
    while True:
        with tarfile.open(archive, "w:gz") as tar:
            for path in files:
                tar.add(path, arcname=f"gpu-check/{path.relative_to(work).as_posix()}")
        if archive.stat().st_size <= limit or not files:
            return [p.relative_to(work).as_posix() for p in files], left_out
        left_out.append(files.pop().relative_to(work).as_posix())


def format_summary(verdicts: list[StepResult]) -> str:
    """A markdown table: step, verdict, seconds used of its budget, what it found or why it was skipped."""
    lines = ["| step | verdict | seconds (budget) | detail |", "|---|---|---|---|"]
    for v in verdicts:
        detail = v.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {v.name} | {v.status} | {v.seconds:.1f} ({v.budget_s:.0f}) | {detail} |")
    return "\n".join(lines)


def _write_summary(out: Path, verdicts: list[StepResult], cuda: bool, capability: int, *,
                   pending: list[str] | None = None, packed: list[str] = (), left_out: list[str] = ()) -> None:
    header = (f"# fusebench gpu-check\n\n{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}; "
              + (f"CUDA device sm_{capability}" if cuda else "no CUDA device: a dry run, GPU steps skipped") + "\n\n")
    if pending:
        footer = f"\nIn progress: {', '.join(pending)} still to run; {ARCHIVE} is written at the end.\n"
    else:
        entries = sorted({path.split("/")[0] + ("/" if "/" in path else "") for path in packed})
        footer = (f"\n{ARCHIVE} holds {len(packed)} files under gpu-check/: {', '.join(entries)}."
                  + (f" Left out of it to stay under {ARCHIVE_LIMIT // 2**20} MiB: {', '.join(left_out)}."
                     if left_out else "") + "\n")
    (out / "summary.md").write_text(header + format_summary(verdicts) + "\n" + footer)


def exit_status(verdicts: list[StepResult]) -> int:
    """1 when a step that ran failed, else 0 (skipped steps do not fail the check)."""
    return 1 if any(v.status == "failed" for v in verdicts) else 0
