"""pytest-benchmark: every provider of the op suites (attention, graph aggregation) on a few catalog cases each
(their CPU-sized variants without CUDA, real sizes with it)."""

import pytest

from fusebench.providers import PROVIDER_NAMES

CASES = {
    "attention": ["bert-base-128", "clip-text-77", "varlen-mixed"],
    "graph": ["gcn/cora-like", "gat/cora-like", "mean/arxiv-like"],
}
PLAN = [pytest.param(case, provider, id=f"{suite}-{case}-{provider}")
        for suite, cases in CASES.items() for case in cases for provider in PROVIDER_NAMES[suite]]


@pytest.mark.parametrize("mode", ["forward", "backward"])
@pytest.mark.parametrize(("case", "provider"), PLAN)
def test_provider(checked_benchmark, case, provider, mode):
    verdict = checked_benchmark(case, provider, mode)
    assert verdict.ratio <= 1.0
