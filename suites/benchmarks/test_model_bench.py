"""pytest-benchmark: whole models (transformers forward and generate, PyG GCN/GAT) on each provider.

Agreement with the float64 eager model is asserted before anything is timed; a Triton provider under
TRITON_INTERPRET=1 is checked and not timed. CPU-sized variants without CUDA, real sizes with it.
"""

import pytest

from fusebench.cases import get, names
from fusebench.integrations.benchmarks import model_providers
from fusebench.measure import INTERPRETER_NOTE

PAIRS = [(case, provider) for case in names("models") for provider in model_providers(get(case))]


@pytest.mark.parametrize(("case", "provider"), PAIRS, ids=[f"{c}-{p}" for c, p in PAIRS])
def test_model(benchmark, time_work, case, provider):
    from fusebench.device import emulate_triton_without_gpu

    emulate_triton_without_gpu()
    from fusebench.integrations.benchmarks import prepare_model

    try:
        prepared = prepare_model(case, provider)
    except NotImplementedError as error:
        pytest.skip(str(error))
    verdict, note = prepared.agreement()
    assert verdict.passed, verdict.describe()
    benchmark.extra_info.update(agreement=verdict.ratio, size=prepared.case.size, shape=prepared.case.shape_text(),
                                note=note)
    if prepared.interpreted:
        benchmark.extra_info["note"] = INTERPRETER_NOTE
        return
    time_work(prepared.call, prepared.device)
