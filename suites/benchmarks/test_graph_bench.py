"""pytest-benchmark: graph aggregation providers on catalog graphs."""

import pytest

from fusebench.providers import PROVIDER_NAMES

PROVIDERS = PROVIDER_NAMES["graph"]


@pytest.mark.parametrize("mode", ["forward", "backward"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", ["gcn/cora-like", "gat/cora-like", "mean/arxiv-like"])
def test_graph(checked_benchmark, case, provider, mode):
    verdict = checked_benchmark(case, provider, mode)
    assert verdict.ratio <= 1.0
