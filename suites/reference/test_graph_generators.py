"""reference/graph_generators.py: determinism, the structure each family promises, and the registry.

There is no oracle for a random graph; the checks are the properties each generator documents
(no self-loops or duplicates where promised, exact counts, lattice degrees, a heavy degree tail,
awkward cases that really are awkward), with statistical bounds stated next to them.
"""

import math

import pytest
import torch

from reference.graph import Graph, in_degree, out_degree
from reference.graph_generators import (
    AWKWARD,
    GENERATORS,
    erdos_renyi,
    generator_names,
    grid_2d,
    make_graph,
    power_law,
    with_duplicate_edges,
    with_isolated_nodes,
    with_self_loops,
)

RANDOM_FAMILIES = ["erdos_renyi", "power_law", "isolated_nodes", "self_loops", "duplicate_edges"]


def _pairs(graph: Graph) -> torch.Tensor:
    return graph.source.long() * graph.num_nodes + graph.destination.long()


def _has_self_loops(graph: Graph) -> bool:
    return bool((graph.source == graph.destination).any())


def _has_duplicates(graph: Graph) -> bool:
    return torch.unique(_pairs(graph)).numel() < graph.num_edges


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("name", generator_names())
def test_every_family_builds_a_valid_graph_deterministically(seed, name, index_dtype):
    graph = make_graph(name, 53, seed=seed, index_dtype=index_dtype)
    again = make_graph(name, 53, seed=seed, index_dtype=index_dtype)
    assert isinstance(graph, Graph) and graph.edge_index.dtype == index_dtype
    assert torch.equal(graph.edge_index, again.edge_index)  # same seed, same edges in the same order
    assert graph.num_nodes == (1 if name == "single_node" else 49 if name == "grid_2d" else 53)


@pytest.mark.parametrize("name", RANDOM_FAMILIES)
def test_random_families_depend_on_the_seed(seed, name):
    first = make_graph(name, 200, seed=seed)
    second = make_graph(name, 200, seed=seed + 1)
    assert not torch.equal(first.edge_index, second.edge_index)


def test_registry_lists_the_awkward_cases_and_rejects_unknown_names(seed):
    assert set(AWKWARD) <= set(GENERATORS)
    assert {"erdos_renyi", "power_law", "grid_2d"} <= set(generator_names())
    with pytest.raises(ValueError, match="name must be one of"):
        make_graph("petersen", 10, seed=seed)


def test_erdos_renyi_gnp_has_no_loops_no_duplicates_and_the_expected_edge_count(seed):
    n, p = 300, 0.02
    graph = erdos_renyi(n, p, seed=seed)
    assert not _has_self_loops(graph) and not _has_duplicates(graph)
    trials = n * (n - 1)
    mean, std = trials * p, math.sqrt(trials * p * (1 - p))
    assert abs(graph.num_edges - mean) < 6 * std  # a binomial count: 6 sigma fails once in ~5e8 runs


def test_erdos_renyi_gnm_has_the_exact_edge_count_even_near_complete(seed):
    graph = erdos_renyi(1000, num_edges=5000, seed=seed)
    assert graph.num_edges == 5000 and not _has_self_loops(graph) and not _has_duplicates(graph)
    complete = erdos_renyi(6, num_edges=30, seed=seed)  # every ordered pair of 6 nodes
    assert torch.unique(_pairs(complete)).numel() == 30 and not _has_self_loops(complete)
    assert erdos_renyi(5, 1.0, seed=seed).num_edges == 20 and erdos_renyi(5, 0.0, seed=seed).num_edges == 0


def test_power_law_has_hubs_and_no_loops_or_duplicates(seed):
    graph = power_law(3000, 4.0, exponent=2.2, seed=seed)
    assert not _has_self_loops(graph) and not _has_duplicates(graph)
    degree = (in_degree(graph) + out_degree(graph)).double()
    # The heaviest node has weight ~ n^(1/(gamma-1)) ~ 790 times the lightest; with ~2 * 12k endpoints
    # it collects hundreds of edges while the mean total degree is about 8. An Erdos-Renyi graph of the
    # same density has a maximum degree around 20.
    assert degree.max() > 10 * degree.mean()


def test_grid_2d_has_lattice_degrees():
    graph = grid_2d(4, 7)
    assert graph.num_nodes == 28 and graph.num_edges == 2 * (4 * 6 + 3 * 7)
    degree = in_degree(graph).view(4, 7)
    assert torch.equal(degree, out_degree(graph).view(4, 7))  # every edge goes both ways
    assert degree[1:-1, 1:-1].eq(4).all() and degree[0, 1:-1].eq(3).all() and degree[0, 0] == 2
    assert grid_2d(1, 1).num_edges == 0
    pairs = set(map(tuple, graph.edge_index.T.tolist()))
    assert all((j, i) in pairs for i, j in pairs)


def test_awkward_cases_are_awkward(seed):
    isolated = make_graph("isolated_nodes", 40, seed=seed)
    lonely = (in_degree(isolated) + out_degree(isolated)) == 0
    assert int(lonely.sum()) >= 10  # round(0.25 * 40) nodes lose every edge (others may have had none)
    assert _has_self_loops(make_graph("self_loops", 40, seed=seed))
    loops = make_graph("self_loops", 40, seed=seed)
    loop_nodes = loops.source[loops.source == loops.destination]
    assert torch.unique(loop_nodes).numel() == loop_nodes.numel() == 12  # one loop on each of 12 nodes
    assert _has_duplicates(make_graph("duplicate_edges", 40, seed=seed))
    assert make_graph("no_edges", 40, seed=seed).num_edges == 0
    single = make_graph("single_node", 40, seed=seed)
    assert single.num_nodes == 1 and single.num_edges == 0


def test_awkward_transforms_keep_the_original_edges(seed):
    base = erdos_renyi(50, num_edges=120, seed=seed)
    for transform in (with_self_loops, with_duplicate_edges):
        grown = transform(base, seed=seed)
        original = torch.unique(_pairs(base))
        assert torch.isin(original, _pairs(grown)).all()
    thinned = with_isolated_nodes(base, 0.2, seed=seed)
    assert torch.isin(_pairs(thinned), _pairs(base)).all()


@pytest.mark.parametrize(("call", "match"), [
    (lambda: erdos_renyi(10, seed=0), "give exactly one of edge_prob and num_edges"),
    (lambda: erdos_renyi(10, 0.5, num_edges=3, seed=0), "give exactly one of edge_prob and num_edges"),
    (lambda: erdos_renyi(10, 1.5, seed=0), r"edge_prob must be in \[0, 1\]"),
    (lambda: erdos_renyi(4, num_edges=13, seed=0), "num_edges must be at most num_nodes"),
    (lambda: erdos_renyi(-1, 0.5, seed=0), "num_nodes must be an int >= 0"),
    (lambda: power_law(10, exponent=2.0, seed=0), "exponent must be > 2"),
    (lambda: grid_2d(0, 3), "rows and cols must be >= 1"),
    (lambda: with_self_loops(grid_2d(2, 2), 0.0, seed=0), r"fraction must be in \(0, 1\]"),
])
def test_generators_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_seed_must_be_an_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        erdos_renyi(10, 0.5, seed=1.5)
