"""`fusebench inspect` (fusebench/inspect.py) on toy kernels: it reads real resources, and its gate bites.

These compile for NVIDIA targets on the CPU machine (no GPU needed): Triton ships ptxas, cuobjdump
and nvdisasm. The test session runs kernels under TRITON_INTERPRET=1, whose jit functions cannot be
compiled, so each inspection runs in a fresh interpreter with TRITON_INTERPRET=0, as the CLI does.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fusebench.inspect import SM_LIMITS, KernelReport, gate, occupancy

HERE = Path(__file__).resolve().parent


def _inspect_toy(capabilities, **spec_kwargs) -> list[KernelReport]:
    code = textwrap.dedent(f"""
        import json, dataclasses
        import toy_kernels
        from fusebench.inspect import inspect_spec
        spec = toy_kernels.matmul_spec(**{spec_kwargs!r})
        print(json.dumps([dataclasses.asdict(inspect_spec(spec, c)) for c in {tuple(capabilities)!r}]))
    """)
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parents[1])]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return [KernelReport(**row) for row in json.loads(result.stdout.strip().splitlines()[-1])]


def test_a_well_behaved_matmul_tile_uses_tensor_cores_and_passes_the_gate():
    reports = _inspect_toy((80, 90), block=64, num_warps=4)
    for report in reports:
        assert report.compiled, report.error
        assert 0 < report.registers <= 255 and not report.spills
        assert report.global_loads > 0 and report.global_loads_128 > 0  # aligned fp16 tiles load 128 bits
        assert 0 < report.occupancy <= 1
    sm80, sm90 = reports
    assert sm80.hmma > 0
    assert sm90.hmma + sm90.hgmma > 0
    assert gate(reports) == []


def test_a_deliberately_spilling_configuration_fails_the_gate():
    # A 64x64 tile on one warp holds a 128-value fp32 accumulator per thread; capping registers at 40 forces
    # spills (on sm_90 this takes the mma.sync path: wgmma refuses to compile under 90 registers at all).
    report, = _inspect_toy((90,), block=64, num_warps=1, maxnreg=40)
    assert report.compiled and report.spills
    failures = gate([report])
    assert len(failures) == 1 and "spills" in failures[0]


def test_a_configuration_that_does_not_compile_fails_the_gate():
    report, = _inspect_toy((80,), block=3, num_warps=4)  # tl.arange needs a power of two
    assert not report.compiled and report.error
    assert "failed to compile" in gate([report])[0]


def test_a_missing_tensor_core_instruction_fails_the_gate_on_sm90_only():
    healthy = dict(compiled=True, registers=64, num_warps=4, expects_tensor_cores=True)
    without = KernelReport("attention.forward", "c", "sm_90", **healthy)
    assert "no tensor-core instruction" in gate([without])[0]
    assert gate([KernelReport("attention.forward", "c", "sm_80", **healthy)]) == []  # gated on sm_90 only
    assert gate([KernelReport("attention.forward", "c", "sm_90", hgmma=4, **healthy)]) == []


def test_a_descriptor_path_without_tma_loads_fails_the_gate_on_sm90_only():
    healthy = dict(compiled=True, registers=64, num_warps=4, hgmma=4, expects_tma=True)
    without = KernelReport("attention.forward", "c tma", "sm_90", **healthy)
    assert "no TMA load" in gate([without])[0]
    assert gate([KernelReport("attention.forward", "c tma", "sm_80", **healthy)]) == []
    assert gate([KernelReport("attention.forward", "c tma", "sm_90", tma_loads=2, **healthy)]) == []


def test_occupancy_follows_the_tightest_limit():
    limits = SM_LIMITS[90]
    assert occupancy(32, 0, 4, limits) == (16, 1.0)  # warp slots bind: 64 / 4
    assert occupancy(255, 0, 4, limits)[0] == 2  # 256 regs x 32 threads x 4 warps = 32K regs per block
    assert occupancy(32, 100 * 1024, 4, limits)[0] == 2  # 228 KB / (100 KB + 1 KB)


@pytest.mark.parametrize("capability", [80, 90])
def test_interpreted_kernels_are_refused_with_advice(capability):
    from fusebench.inspect import inspect_spec

    sys.path.insert(0, str(HERE))
    try:
        import toy_kernels
    finally:
        sys.path.remove(str(HERE))
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("this session compiles kernels for real; the refusal only applies under the interpreter")
    with pytest.raises(RuntimeError, match="fresh process"):
        inspect_spec(toy_kernels.matmul_spec(), capability)


def test_reports_become_store_rows_one_per_kernel_config_target_and_metric(tmp_path):
    from fusebench.device import identity
    from fusebench.inspect import STORED_METRICS, store_rows
    from fusebench.store import ResultsStore

    compiled = KernelReport("attention.forward", "fp16 D64 M128", "sm_90", True, compile_s=1.5, registers=168,
                            spill_store_bytes=8, spill_load_bytes=4, shared_bytes=48 * 1024, num_warps=8,
                            occupancy=0.25, hgmma=24, global_loads=8, global_loads_128=6)
    failed = KernelReport("attention.forward", "fp16 D64 M128", "sm_80", False, error="CompilationError: boom")
    rows = store_rows([compiled, failed], identity("cpu"), "run-1", "2026-01-01T00:00:00Z")
    assert len(rows) == 1 + len(STORED_METRICS) + 1
    ResultsStore(tmp_path).append(rows)
    frame = ResultsStore(tmp_path).read(strict=True).frame
    got = {(r.mode, r.metric): (r.p50, r.unit) for r in frame.itertuples()}
    assert got[("sm_90", "registers")] == (168, "registers/thread")
    assert got[("sm_90", "spill_bytes")] == (12, "bytes")
    assert got[("sm_90", "shared_kb")] == (48, "KB")
    assert got[("sm_90", "occupancy")] == (25, "%")
    assert got[("sm_90", "hgmma")] == (24, "instructions")
    assert got[("sm_90", "load128_share")] == (75, "%")
    assert got[("sm_90", "compiled")] == (1, "bool")
    assert got[("sm_80", "compiled")] == (0, "bool")
    assert not any(mode == "sm_80" and metric != "compiled" for mode, metric in got)
    assert frame.loc[frame["mode"] == "sm_80", "note"].item() == "CompilationError: boom"
    assert set(frame["suite"]) == {"inspect"} and set(frame["case"]) == {"attention.forward"}


def test_the_cli_stores_rows_unless_told_not_to(tmp_path):
    from fusebench.cli import build_parser

    args = build_parser().parse_args(["inspect", "--no-store", "--results", str(tmp_path)])
    assert args.no_store and args.results == str(tmp_path)
    assert not build_parser().parse_args(["inspect"]).no_store


def test_the_specialization_a_launch_gets_is_what_compiles():
    """spmm.segment_sum's F128 tile as an F = 128 launch and as an F = 602 launch specialize it: the aligned
    one may load 128 bits at a time, the ragged one (rows 602 * 2 bytes apart) cannot."""
    from test_specializations import _segment_sum_launches

    from fusebench.inspect import specialized_specs
    from kernels import spmm

    rows, _ = specialized_specs(spmm.compile_specs(), _segment_sum_launches([128, 602]))
    wanted = {r.cases: (r.divisible, r.ones) for r in rows
              if r.kernel == "spmm.segment_sum" and r.config == "fp16 i64 E16 F128 w4"}
    code = textwrap.dedent(f"""
        import json, dataclasses
        from kernels import spmm
        from fusebench.inspect import inspect_spec
        spec, = [s for s in spmm.compile_specs()
                 if s.kernel == "spmm.segment_sum" and s.config == "fp16 i64 E16 F128 w4"]
        out = {{}}
        for case, (divisible, ones) in {wanted!r}.items():
            out[case] = dataclasses.asdict(inspect_spec(dataclasses.replace(spec, divisible=divisible, ones=ones), 90))
        print(json.dumps(out))
    """)
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1", PYTHONPATH=str(HERE.parents[1]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    reports = {case: KernelReport(**row) for case, row in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    aligned, ragged = reports["F128"], reports["F602"]
    assert aligned.compiled and ragged.compiled
    assert aligned.global_loads_128 > 0
    assert ragged.global_loads_128 < aligned.global_loads_128


def test_a_spec_shipped_for_some_targets_is_compiled_for_those_only():
    import dataclasses

    from fusebench.inspect import inspect_all

    sys.path.insert(0, str(HERE))
    try:
        import toy_kernels
    finally:
        sys.path.remove(str(HERE))
    spec = dataclasses.replace(toy_kernels.matmul_spec(), targets=(90,))
    assert inspect_all([spec], (80, 120)) == []  # nothing to compile: not even the interpreter's refusal
