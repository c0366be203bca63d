"""The one provider list (fusebench.providers.PROVIDER_NAMES) that the asv and pytest-benchmark suites read."""

import importlib

import pytest

from fusebench.cases import SUITES, get, names
from fusebench.integrations.benchmarks import model_providers
from fusebench.providers import PROVIDER_NAMES, providers


@pytest.mark.parametrize("suite", ["attention", "graph"])
def test_every_discovered_provider_is_in_the_list(suite):
    # A provider found here but missing from the list would never get an asv history or a pytest-benchmark row
    discovered = [p.name for p in providers(suite)]
    assert discovered and set(discovered) <= set(PROVIDER_NAMES[suite]), set(discovered) - set(PROVIDER_NAMES[suite])


def test_every_suite_has_its_list_and_every_model_provider_is_in_it():
    assert set(PROVIDER_NAMES) == set(SUITES)
    used = {p for name in names("models") for p in model_providers(get(name))}
    assert used == set(PROVIDER_NAMES["models"])


def test_the_benchmark_suites_are_parametrized_over_the_list():
    asv_attention = importlib.import_module("suites.asv.bench_attention")
    asv_graph = importlib.import_module("suites.asv.bench_graph")
    asv_models = importlib.import_module("suites.asv.bench_models")
    assert asv_attention.AttentionSpeed.params[1] == list(PROVIDER_NAMES["attention"])
    assert asv_graph.GraphSpeed.params[1] == list(PROVIDER_NAMES["graph"])
    assert asv_models.ModelSpeed.params[1] == list(PROVIDER_NAMES["models"])
