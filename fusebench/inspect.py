"""`fusebench inspect`: a static report of every shipped kernel configuration, compiled with no GPU present.

For each (kernel, configuration, target) the kernel is compiled by Triton for an NVIDIA target
(``triton.compile(ASTSource(...), target=GPUTarget("cuda", capability, 32))``), and the cubin is read
with the tools Triton ships:

* ``cuobjdump -res-usage``: registers per thread, local memory, static shared memory;
* ``ptxas -v`` on the PTX (the ptxas Triton itself uses): spill stores and loads in bytes;
* ``nvdisasm``: the SASS, in which tensor-core instructions are counted (``HMMA`` on sm_80 and later,
  ``HGMMA``, i.e. wgmma, on sm_90) and global loads are classified as 128-bit (``LDG.E.128``,
  ``LDGSTS...128``, TMA ``UTMALDG``) or narrower.

What a row stands for: one shipped configuration (``compile_specs()`` of a kernels/ module) compiled
with one specialization that real launches give it. :mod:`fusebench.specializations` records every
launch of the case catalog's attention and graph cases (both sizes, forward and backward, each dtype) and
of the correctness tiers' shapes, and asks Triton's JIT binder what each compiles (arguments divisible by
16, integers equal to 1); the flags a call decides (``CompileSpec.launch_constexprs``: attention's causal,
mask kind, key padding, varlen, O copy) come from the launch too. Each configuration is compiled once per
distinct specialization among the launches it serves, and the row names those launches' cases. So an
aligned (F % 16 == 0) and a ragged (F = 602) launch of ``spmm.segment_sum`` are two rows, as are a causal
and a plain attention launch, and the forward's TMA path (sm_90) is a configuration of its own. A
configuration no launch serves is listed, not compiled.

Occupancy is derived from registers, shared memory (Triton's dynamic shared memory plus static) and
warps with the per-SM limits in ``SM_LIMITS``. The CI gate (``--check``) fails when a shipped
configuration does not compile, spills, or an attention configuration has no tensor-core instruction
on sm_90, or one that reads through tensor descriptors (``expects_tma``) has no TMA load there.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from fusebench.sass_cost import MIX, loop_cost

GATED_CAPABILITIES = (80, 90)  # the CI gate applies to these; newer ones are reported when they compile
EXTRA_CAPABILITIES = (100, 120)


@dataclass(frozen=True)
class SmLimits:
    registers: int = 65536
    max_warps: int = 64
    max_blocks: int = 32
    shared_bytes: int = 0  # per SM, usable by blocks
    register_unit: int = 256  # registers are allocated per warp in units of 256


# Shared memory per SM available to blocks (CUDA programming guide, compute capability tables):
# sm_80 (A100) 164 KB, sm_90 (H100/H200) 228 KB, sm_100 228 KB, sm_120 100 KB; 1 KB per block is reserved.
SM_LIMITS = {
    80: SmLimits(shared_bytes=164 * 1024),
    90: SmLimits(shared_bytes=228 * 1024),
    100: SmLimits(shared_bytes=228 * 1024),
    120: SmLimits(shared_bytes=100 * 1024, max_warps=48),
}
RESERVED_SHARED_PER_BLOCK = 1024


@dataclass
class KernelReport:
    kernel: str
    config: str
    target: str
    compiled: bool
    error: str = ""
    compile_s: float = 0.0
    registers: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    local_bytes: int = 0
    shared_bytes: int = 0  # dynamic (Triton) + static
    num_warps: int = 0
    blocks_per_sm: int = 0
    occupancy: float = 0.0  # resident warps / max warps per SM
    hmma: int = 0
    hgmma: int = 0
    global_loads: int = 0
    global_loads_128: int = 0
    tma_loads: int = 0
    expects_tensor_cores: bool = False
    expects_tma: bool = False
    specialization: str = ""  # what the launches' arguments specialize (CompileSpec.specialization)
    cases: str = ""  # the launches (case@size, or a correctness-tier shape) this row stands for
    # the main loop's static cost (fusebench/sass_cost.py): per iteration, per tile element, per 128x128 tile
    loop_instructions: int = 0
    per_element: float = 0.0
    issue_clocks: float = 0.0
    tensor_clocks: float = 0.0
    mix: dict = field(default_factory=dict)

    @property
    def spills(self) -> bool:
        return self.spill_store_bytes > 0 or self.spill_load_bytes > 0

    def gate_failures(self) -> list[str]:
        """Why this row fails the CI gate (empty when it passes)."""
        capability = int(self.target.removeprefix("sm_").rstrip("a"))
        if capability not in GATED_CAPABILITIES:
            return []
        where = f"{self.kernel} [{self.config}] {{{self.specialization}}} on {self.target}"
        if not self.compiled:
            return [f"{where} failed to compile: {self.error}"]
        failures = []
        if self.spills:
            failures.append(f"{where} spills ({self.spill_store_bytes} B stored, {self.spill_load_bytes} B loaded)")
        if self.expects_tma and capability == 90 and self.tma_loads == 0:
            failures.append(f"{where} has no TMA load (UTMALDG) although its spec reads through descriptors")
        if self.expects_tensor_cores and capability == 90 and self.hmma + self.hgmma == 0:
            failures.append(f"{where} has no tensor-core instruction (HMMA/HGMMA)")
        return failures


def _nvidia_bin() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def _run(args: list[str]) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()[:500]}")
    return result.stdout + result.stderr


def occupancy(registers: int, shared_bytes: int, num_warps: int, limits: SmLimits) -> tuple[int, float]:
    """Resident blocks per SM and the fraction of the SM's warp slots they fill."""
    regs_per_warp = -(-max(registers, 1) * 32 // limits.register_unit) * limits.register_unit
    by_registers = limits.registers // (regs_per_warp * num_warps)
    by_warps = limits.max_warps // num_warps
    by_shared = limits.shared_bytes // (shared_bytes + RESERVED_SHARED_PER_BLOCK) if shared_bytes else limits.max_blocks
    blocks = max(0, min(by_registers, by_warps, by_shared, limits.max_blocks))
    return blocks, blocks * num_warps / limits.max_warps


def _count_sass(sass: str) -> dict[str, int]:
    opcodes = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass)
    loads = [op for op in opcodes if op.startswith(("LDG", "LDGSTS", "UTMALDG"))]
    wide = [op for op in loads if op.startswith("UTMALDG") or ".128" in op]
    return {
        "hmma": sum(op.startswith("HMMA") for op in opcodes),
        "hgmma": sum(op.startswith("HGMMA") for op in opcodes),
        "global_loads": len(loads),
        "global_loads_128": len(wide),
        "tma_loads": sum(op.startswith("UTMALDG") for op in loads),
    }


def _first_informative_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "fatal" in line or "error" in line.lower():
            return line[:300]
    return lines[0][:300] if lines else ""


def inspect_spec(spec, capability: int) -> KernelReport:
    """Compile one CompileSpec for ``sm_<capability>`` and read its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.runtime.jit import JITFunction

    if not isinstance(spec.fn, JITFunction):
        raise RuntimeError(
            f"{spec.kernel}: its jit function was created under TRITON_INTERPRET=1 and cannot be compiled; "
            "run `fusebench inspect` in a fresh process (it sets TRITON_INTERPRET=0 before importing kernels)"
        )
    arch = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
    report = KernelReport(spec.kernel, spec.config, f"sm_{capability}", False, num_warps=spec.num_warps,
                          expects_tensor_cores=spec.expects_tensor_cores, expects_tma=spec.expects_tma,
                          specialization=spec.specialization, cases=spec.cases)
    start = time.perf_counter()
    try:
        compiled = triton.compile(spec.source(), target=GPUTarget("cuda", capability, 32),
                                  options={"num_warps": spec.num_warps, "num_stages": spec.num_stages, **spec.options})
    except Exception as error:  # noqa: BLE001 - any compiler failure is a report row, not a crash
        report.error = f"{type(error).__name__}: {_first_informative_line(str(error))}"
        report.compile_s = time.perf_counter() - start
        return report
    report.compile_s = time.perf_counter() - start
    report.compiled = True

    tools = _nvidia_bin()
    with tempfile.TemporaryDirectory() as tmp:
        cubin, ptx = Path(tmp) / "k.cubin", Path(tmp) / "k.ptx"
        cubin.write_bytes(compiled.asm["cubin"])
        ptx.write_text(compiled.asm["ptx"])
        usage = _run([str(tools / "cuobjdump"), "-res-usage", str(cubin)])
        verbose = _run([get_ptxas(capability).path, f"--gpu-name={arch}", "-v", str(ptx), "-o", str(Path(tmp) / "v.o")])
        sass = _run([str(tools / "nvdisasm"), "-c", str(cubin)])

    fields = dict(re.findall(r"\b(REG|SHARED|LOCAL):(\d+)", usage))
    report.registers = int(fields.get("REG", 0))
    report.local_bytes = int(fields.get("LOCAL", 0))
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", verbose)
    report.spill_store_bytes, report.spill_load_bytes = (int(spills[1]), int(spills[2])) if spills else (0, 0)
    report.shared_bytes = int(compiled.metadata.shared) + int(fields.get("SHARED", 0))
    report.blocks_per_sm, report.occupancy = occupancy(report.registers, report.shared_bytes, spec.num_warps,
                                                       SM_LIMITS.get(capability, SmLimits(shared_bytes=100 * 1024)))
    for key, value in _count_sass(sass).items():
        setattr(report, key, value)
    for key, value in asdict(loop_cost(sass, spec.num_warps, spec.constexprs, capability)).items():
        setattr(report, key, value)
    return report


def shipped_specs(modules: list[str] | None = None) -> list:
    """Every CompileSpec of every kernels/ module that ships them (``compile_specs()``)."""
    from fusebench.namespace import check_kernels_namespace

    check_kernels_namespace()
    import kernels

    names = modules or sorted(m.name for m in pkgutil.iter_modules(kernels.__path__) if not m.name.startswith("_"))
    specs = []
    for name in names:
        module = importlib.import_module(f"kernels.{name}")
        if hasattr(module, "compile_specs"):
            specs.extend(module.compile_specs())
    return specs


def specialized_specs(specs, launches) -> tuple[list, list]:
    """``(rows, unserved)``: each configuration once per distinct specialization among the launches it
    serves (their cases joined), and the configurations that no launch serves."""
    rows: dict[tuple, object] = {}
    unserved = []
    for spec in specs:
        served = [spec.for_launch(launch) for launch in launches if spec.serves(launch)]
        if not served:
            unserved.append(spec)
        for row in served:
            key = (spec.kernel, spec.config, row.specialization)  # the label names flags, ones and alignment
            if key in rows:
                known = rows[key].cases.split(", ")
                row = replace(rows[key], cases=", ".join(known + [c for c in row.cases.split(", ") if c not in known]))
            rows[key] = row
    return list(rows.values()), unserved


def catalog_specs(modules: list[str] | None = None, launches: str = "all") -> tuple[list, list]:
    """:func:`specialized_specs` of the shipped configurations and the catalog's recorded launches
    (``launches``: which of ``fusebench.specializations.LAUNCH_SETS``)."""
    from fusebench.specializations import catalog_launches

    return specialized_specs(shipped_specs(modules), catalog_launches(launches))


def row_label(kernel: str, config: str, specialization: str) -> str:
    """One report row's name: ``spmm.segment_sum [fp16 i64 E16 F128 w4] {all /16}``."""
    return f"{kernel} [{config}] {{{specialization}}}"


_SPECS_FOR_WORKERS: list = []


def _inspect_task(index: int, capability: int) -> KernelReport:
    return inspect_spec(_SPECS_FOR_WORKERS[index], capability)


def inspect_all(specs, capabilities=GATED_CAPABILITIES + EXTRA_CAPABILITIES, jobs: int = 1) -> list[KernelReport]:
    """Compile every spec for every capability; ``jobs > 1`` compiles in that many forked processes."""
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # state Triton 3.9's default, silencing its warning
    tasks = [(index, capability) for index in range(len(specs)) for capability in capabilities
             if specs[index].targets is None or capability in specs[index].targets]  # a per-target config
    if jobs <= 1 or len(tasks) <= 1:
        return [inspect_spec(specs[index], capability) for index, capability in tasks]
    import multiprocessing

    global _SPECS_FOR_WORKERS
    _SPECS_FOR_WORKERS = list(specs)  # inherited by the forked workers: jit functions need not pickle
    with multiprocessing.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
        return pool.starmap(_inspect_task, tasks, chunksize=1)


def format_reports(reports: list[KernelReport]) -> str:
    header = ("kernel", "config", "specialization", "target", "regs", "spill B", "smem KB", "warps", "occ", "HMMA",
              "HGMMA", "ld128/ld", "compile s", "cases")
    rows = []
    for r in reports:
        if not r.compiled:
            rows.append((r.kernel, r.config, r.specialization, r.target, "-", "-", "-", "-", "-", "-", "-", "-",
                         f"FAILED: {r.error[:60]}", _short_cases(r.cases)))
            continue
        rows.append((r.kernel, r.config, r.specialization, r.target, r.registers,
                     r.spill_store_bytes + r.spill_load_bytes, f"{r.shared_bytes / 1024:.1f}", r.num_warps,
                     f"{r.occupancy:.0%}", r.hmma, r.hgmma, f"{r.global_loads_128}/{r.global_loads}",
                     f"{r.compile_s:.2f}", _short_cases(r.cases)))
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _short_cases(cases: str, shown: int = 2) -> str:
    names = [c for c in cases.split(", ") if c]
    return ", ".join(names[:shown]) + (f" +{len(names) - shown}" if len(names) > shown else "")


def as_dicts(reports: list[KernelReport]) -> list[dict]:
    return [asdict(r) | {"spills": r.spills} for r in reports]


def gate(reports: list[KernelReport]) -> list[str]:
    return [failure for r in reports for failure in r.gate_failures()]


# (metric, unit, value of a compiled report) of the rows `fusebench inspect` stores, one per report and metric.
STORED_METRICS = (
    ("registers", "registers/thread", lambda r: r.registers),
    ("spill_bytes", "bytes", lambda r: r.spill_store_bytes + r.spill_load_bytes),
    ("shared_kb", "KB", lambda r: r.shared_bytes / 1024),
    ("occupancy", "%", lambda r: 100 * r.occupancy),
    ("hmma", "instructions", lambda r: r.hmma),
    ("hgmma", "instructions", lambda r: r.hgmma),
    ("load128_share", "%", lambda r: 100 * r.global_loads_128 / r.global_loads if r.global_loads else 0.0),
    ("compile_s", "s", lambda r: r.compile_s),
    ("loop_instructions", "instructions", lambda r: r.loop_instructions),
    ("instructions_per_element", "thread-instructions/element", lambda r: r.per_element),
    ("issue_clocks", "clocks/128x128 tile", lambda r: r.issue_clocks),
    ("tensor_clocks", "clocks/128x128 tile", lambda r: r.tensor_clocks),
    *((f"loop_{kind}", "instructions", lambda r, kind=kind: r.mix.get(kind, 0)) for kind in MIX),
)


def store_rows(reports: list[KernelReport], ident, run_id: str, timestamp: str) -> list[dict]:
    """Rows for the results store: one per (kernel, config, target, metric).

    Suite ``inspect``; ``case`` is the kernel, ``shape`` the configuration and its specialization
    (``fp16 i64 E16 F128 w4 {all /16}``), ``note`` the cases it stands for, ``mode`` the target
    (``sm_90``), ``provider`` ``triton``, ``size`` ``static`` (compiled, never run). A configuration
    that failed to compile gets one ``compiled`` row of 0 with the error in ``note``; one that
    compiled gets a ``compiled`` row of 1 and the metrics of :data:`STORED_METRICS`. The identity
    columns describe the machine that compiled, which need not have a GPU.
    """
    from fusebench.runner import _identity_columns

    identity_columns = _identity_columns(ident)
    rows = []
    for r in reports:
        base = {"run_id": run_id, "timestamp": timestamp, "suite": "inspect", "case": r.kernel, "size": "static",
                "shape": f"{r.config} {{{r.specialization}}}" if r.specialization else r.config,
                "axis_value": int(r.target.removeprefix("sm_").rstrip("a")), "provider": "triton", "mode": r.target,
                "dtype": "", "samples": 1, **identity_columns}
        value = lambda v: {"p20": float(v), "p50": float(v), "p80": float(v)}
        rows.append({**base, "metric": "compiled", "unit": "bool", **value(r.compiled), "note": r.error or r.cases})
        if r.compiled:
            rows += [{**base, "metric": metric, "unit": unit, **value(get(r)), "note": r.cases}
                     for metric, unit, get in STORED_METRICS]
    return rows
