"""pytest-benchmark: attention providers on catalog cases (smallest CPU-sized ones in the smoke run)."""

import pytest

from fusebench.providers import PROVIDER_NAMES

PROVIDERS = PROVIDER_NAMES["attention"]


@pytest.mark.parametrize("mode", ["forward", "backward"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", ["bert-base-128", "clip-text-77", "varlen-mixed"])
def test_attention(checked_benchmark, case, provider, mode):
    verdict = checked_benchmark(case, provider, mode)
    assert verdict.ratio <= 1.0
