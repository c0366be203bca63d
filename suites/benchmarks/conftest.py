"""Shared by the pytest-benchmark suites: build a case on a provider, check it, then time it.

`pytest suites/benchmarks --benchmark-enable --benchmark-json=OUT.json` measures; the default test run
(pyproject's --benchmark-disable) calls each benchmark once, as a smoke test. Cases come at the size
for the device: CPU-sized variants without CUDA, real sizes with it.
"""

import pytest


@pytest.fixture
def checked_benchmark(benchmark):
    """``run(case, provider, mode)``: skip what cannot run here, assert agreement, then benchmark.

    Agreement comes first and is asserted: a fast wrong result fails. Its ratio is stored in the
    benchmark's extra_info next to the work (FLOPs or bytes) the time stands for. A Triton kernel under
    TRITON_INTERPRET=1 is checked and not timed (an interpreter time is not a kernel time).
    """
    from fusebench.device import emulate_triton_without_gpu

    emulate_triton_without_gpu()
    from fusebench.runner import INTERPRETER_NOTE, prepare

    def run(case: str, provider: str, mode: str):
        try:
            prepared = prepare(case, provider, mode)
        except NotImplementedError as error:
            pytest.skip(f"{provider} cannot run {case} here: {error}")
        verdict = prepared.agreement()
        assert verdict.passed, verdict.describe()
        work, unit = prepared.work()
        benchmark.extra_info.update(agreement=verdict.ratio, work=work, work_unit=unit, size=prepared.case.size,
                                    shape=prepared.case.shape_text())
        if prepared.interpreted:
            benchmark.extra_info["note"] = INTERPRETER_NOTE
            return verdict
        call = prepared.call
        if prepared.workload.device == "cuda":  # pytest-benchmark reads a host clock: wait for the GPU
            import torch

            call = lambda: (prepared.call(), torch.cuda.synchronize())  # noqa: E731
        benchmark(call)
        return verdict

    return run
