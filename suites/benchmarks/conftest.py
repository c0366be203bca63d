"""Shared by the pytest-benchmark suites: build a case on a provider, check it, then time it.

`pytest suites/benchmarks --benchmark-enable --benchmark-json=OUT.json` measures; the default test run
(pyproject's --benchmark-disable) calls each benchmark once, as a smoke test. Cases come at the size
for the device: CPU-sized variants without CUDA, real sizes with it.
"""

import pytest


def time_gpu_work(benchmark, call, device: str) -> None:
    """Benchmark ``call``: on the CPU with pytest-benchmark's own timer; on a GPU with the runner's timer.

    A GPU call is timed by :func:`fusebench.metrics.timing` (do_bench: CUDA events, L2 flushed, at least 10
    samples), the figures `fusebench run` stores, and handed to pytest-benchmark as its samples through a
    pedantic run of one call per round whose host time is replaced, so the JSON holds device times.
    """
    if not str(device).startswith("cuda"):
        benchmark(call)
        return
    from fusebench.metrics import timing

    measured = timing(call, device)
    benchmark.extra_info.update(timer=measured.timer, samples=measured.count, p20_ms=measured.quantiles.p20,
                                p50_ms=measured.quantiles.p50, p80_ms=measured.quantiles.p80)
    if measured.graph is not None:
        benchmark.extra_info["cudagraph_p50_ms"] = measured.graph.p50
    samples = iter([ms * 1e-3 for ms in measured.samples])
    clock = {"now": 0.0, "reads": 0}

    def device_clock():  # read at the start and the end of each round: a round lasts the next do_bench sample
        clock["reads"] += 1
        if clock["reads"] % 2 == 0:
            clock["now"] += next(samples, 0.0)
        return clock["now"]

    benchmark._timer = device_clock
    benchmark.pedantic(call, rounds=measured.count, iterations=1, warmup_rounds=0)


@pytest.fixture
def time_work(benchmark):
    """``time_work(call, device)``: :func:`time_gpu_work` with this test's benchmark fixture."""
    return lambda call, device: time_gpu_work(benchmark, call, device)


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
        time_gpu_work(benchmark, prepared.call, prepared.workload.device)
        return verdict

    return run
