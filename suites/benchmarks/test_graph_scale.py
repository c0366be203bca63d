"""Scale: the reference aggregation on a 100k-node, 1M-edge graph, on the CPU, next to PyG.

The reference works in O(E * F) memory (gather, scale, index_add / scatter_reduce); a dense N x N
float32 adjacency of this graph would take 40 GB. Each test times one provider and one reduction with
pytest-benchmark (``benchmark.pedantic``: a few rounds of one call, the graph built once per module),
checks that the result agrees with a float64 gold (PyG, ``torch_geometric.nn.SimpleConv`` with the same
weighted message and reduction, against the reference in float32 as its baseline), and that the process's
peak memory grew by far less than the dense matrix.

Run it with its timings (pytest-benchmark's table):

    .venv/bin/python -m pytest suites/benchmarks/test_graph_scale.py -m slow --benchmark-enable -p no:xdist

Marked ``slow``: building the graph and running both providers takes longer than the default CPU tier
allows for one test.
"""

from __future__ import annotations

import resource

import pytest
import torch

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor, seed_for
from reference.gnn import aggregate
from reference.graph_generators import erdos_renyi

NUM_NODES = 100_000
NUM_EDGES = 1_000_000
FEATURES = 32
ROUNDS = 3
DENSE_BYTES = NUM_NODES * NUM_NODES * 4  # the float32 adjacency the reference never builds


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


@pytest.fixture(scope="module")
def big_graph():
    """(graph with random positive edge weights, node features): built once for every test here."""
    seed = seed_for("graph-scale") % 2**31
    graph = erdos_renyi(NUM_NODES, num_edges=NUM_EDGES, seed=seed)
    weight = random_tensor((NUM_EDGES,), seed=seed + 1, dtype=torch.float32, distribution="uniform").abs()
    x = random_tensor((NUM_NODES, FEATURES), seed=seed + 2, dtype=torch.float32)
    return graph.with_edge_weight(weight), x


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["reference", "pyg"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_million_edge_aggregation_in_edge_memory_next_to_pyg(benchmark, big_graph, reduce, provider):
    import torch_geometric.nn as pyg_nn

    graph, x = big_graph
    ours = lambda: aggregate(graph, x, reduce=reduce)
    if provider == "pyg":
        conv = pyg_nn.SimpleConv(aggr=reduce)
        call = lambda: conv(x, graph.edge_index, graph.edge_weight)
    else:
        call = ours
    rss_before = _peak_rss_bytes()
    out = benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    growth = _peak_rss_bytes() - rss_before
    benchmark.extra_info.update(nodes=NUM_NODES, edges=NUM_EDGES, features=FEATURES,
                                threads=torch.get_num_threads(), peak_rss_growth_bytes=growth)
    # The largest live tensors are the (E, F) messages (128 MiB in float32) and a few (N, F) outputs; 2 GiB
    # leaves room for allocator slack and is still 20x below the dense adjacency.
    assert growth < 2 * 2**30, f"peak RSS grew by {growth / 2**20:.0f} MiB (dense: {DENSE_BYTES / 2**30:.0f} GiB)"
    gold = aggregate(graph.to(weight_dtype=torch.float64), x.double(), reduce=reduce)
    if provider == "pyg":  # the reference in float32 is PyG's same-precision baseline
        verdict = assert_agrees(out, gold, ours(), name=f"PyG {reduce}")
    else:
        verdict = assert_agrees(out, gold, name=f"reference {reduce}")
    benchmark.extra_info["agreement"] = verdict.ratio
