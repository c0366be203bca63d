"""reference/graph.py against PyG: CSR/CSC layouts, self-loops, degrees, GCN normalization, validation.

Oracles: ``torch_geometric.EdgeIndex`` (stable sort + compressed pointers), ``torch_geometric.utils``
(degree, add_self_loops, add_remaining_self_loops, remove_self_loops) and PyG's ``gcn_norm``; the GCN
normalization also against the dense formula ``D^-1/2 (A + I) D^-1/2`` written out here. Every
generator of reference.graph_generators is covered, the awkward cases included, with int32 and int64
indices.
"""

import pytest
import torch
import torch_geometric.utils as pyg_utils
from torch_geometric import EdgeIndex
from torch_geometric.nn.conv.gcn_conv import gcn_norm as pyg_gcn_norm

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.graph import (
    Graph,
    add_remaining_self_loops,
    add_self_loops,
    compressed_to_coo,
    gcn_norm,
    in_degree,
    out_degree,
    remove_self_loops,
    validate_compressed,
)
from reference.graph_generators import generator_names, make_graph, no_edges

DTYPES = [torch.float64, torch.float32]
INDEX_DTYPES = [torch.int64, torch.int32]
NUM_NODES = 37  # odd: not a multiple of any block a kernel might use


def _positive_weights(graph: Graph, seed: int) -> torch.Tensor:
    # in (0.1, 1.1]: positive, so every degree is positive where it is not empty
    return random_tensor((graph.num_edges,), seed=seed, dtype=torch.float64, distribution="uniform").abs() + 0.1


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("name", generator_names())
def test_csr_and_csc_match_pyg_edge_index(seed, name, index_dtype):
    graph = make_graph(name, NUM_NODES, seed=seed, index_dtype=index_dtype)
    pyg = EdgeIndex(graph.edge_index, sparse_size=(graph.num_nodes, graph.num_nodes))
    # CSR with rows = destinations is PyG's CSC of (source, destination): sort by row 1, pointers over it.
    by_destination, perm = pyg.sort_by("col", stable=True)
    (rowptr, col), _ = by_destination.get_csc()
    csr = graph.csr()
    assert csr.rowptr.dtype == csr.col.dtype == csr.perm.dtype == index_dtype
    assert torch.equal(csr.rowptr.long(), rowptr.long())
    assert torch.equal(csr.col.long(), col.long())
    assert torch.equal(csr.perm.long(), perm.long())
    by_source, perm = pyg.sort_by("row", stable=True)
    (rowptr, col), _ = by_source.get_csr()
    csc = graph.csc()
    assert torch.equal(csc.rowptr.long(), rowptr.long())
    assert torch.equal(csc.col.long(), col.long())
    assert torch.equal(csc.perm.long(), perm.long())


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("name", generator_names())
def test_compressed_layouts_round_trip_to_the_edge_list(seed, name, index_dtype):
    graph = make_graph(name, NUM_NODES, seed=seed, index_dtype=index_dtype)
    for layout, rows_are in ((graph.csr(), "destination"), (graph.csc(), "source")):
        validate_compressed(layout.rowptr, layout.col, graph.num_nodes)
        assert torch.equal(torch.sort(layout.perm.long()).values, torch.arange(graph.num_edges))  # a permutation
        back = compressed_to_coo(layout.rowptr, layout.col, graph.num_nodes, rows_are=rows_are)
        assert back.dtype == index_dtype
        assert torch.equal(back, graph.edge_index[:, layout.perm.long()])
        restored = torch.empty_like(back)
        restored[:, layout.perm.long()] = back
        assert torch.equal(restored, graph.edge_index)


def test_layouts_are_cached_and_shared_by_reweighted_graphs(seed):
    graph = make_graph("erdos_renyi", NUM_NODES, seed=seed)
    assert graph.csr() is graph.csr() and graph.csc() is graph.csc()
    reweighted = graph.with_edge_weight(_positive_weights(graph, seed))
    assert reweighted.csr() is graph.csr() and reweighted.csc() is graph.csc()
    # the self-looped structure is cached too, so a layer applied twice reuses one CSR
    for add in (add_self_loops, add_remaining_self_loops):
        assert add(graph) is add(graph)
        assert add(reweighted, 2.0).csr() is add(graph).csr()
    assert remove_self_loops(reweighted).csc() is remove_self_loops(graph).csc()


@pytest.mark.parametrize("name", generator_names())
def test_degrees_match_pyg(seed, name):
    graph = make_graph(name, NUM_NODES, seed=seed)
    assert torch.equal(in_degree(graph), pyg_utils.degree(graph.destination, graph.num_nodes, torch.long))
    assert torch.equal(out_degree(graph), pyg_utils.degree(graph.source, graph.num_nodes, torch.long))
    weighted = graph.with_edge_weight(_positive_weights(graph, seed))
    expected = pyg_utils.scatter(weighted.edge_weight, graph.destination, 0, graph.num_nodes, "sum")
    assert_agrees(expected, in_degree(weighted, weighted=True), name="weighted in-degree")
    expected = pyg_utils.scatter(weighted.edge_weight, graph.source, 0, graph.num_nodes, "sum")
    assert_agrees(expected, out_degree(weighted, weighted=True), name="weighted out-degree")


@pytest.mark.parametrize("name", generator_names())
def test_self_loop_operations_match_pyg(seed, name):
    graph = make_graph(name, NUM_NODES, seed=seed)
    graph = graph.with_edge_weight(_positive_weights(graph, seed))
    n = graph.num_nodes
    for ours, (edge_index, weight) in (
        (add_self_loops(graph, 0.5), pyg_utils.add_self_loops(graph.edge_index, graph.edge_weight, 0.5, n)),
        (add_remaining_self_loops(graph, 2.0),
         pyg_utils.add_remaining_self_loops(graph.edge_index, graph.edge_weight, 2.0, n)),
        (remove_self_loops(graph), pyg_utils.remove_self_loops(graph.edge_index, graph.edge_weight)),
    ):
        assert torch.equal(ours.edge_index, edge_index)
        assert torch.equal(ours.edge_weight, weight)
    assert in_degree(add_self_loops(graph)).equal(in_degree(graph) + 1)
    loops = add_remaining_self_loops(graph)
    assert int((loops.source == loops.destination).sum()) == n  # exactly one loop per node


def test_add_remaining_self_loops_keeps_the_last_existing_loop_weight():
    edge_index = torch.tensor([[0, 1, 1, 2], [0, 1, 1, 0]])  # node 0 has one loop, node 1 two, node 2 none
    graph = Graph(edge_index, 3, torch.tensor([5.0, 6.0, 7.0, 8.0]))
    loops = add_remaining_self_loops(graph, fill_value=1.5)
    assert loops.edge_index.tolist() == [[2, 0, 1, 2], [0, 0, 1, 2]]
    assert loops.edge_weight.tolist() == [8.0, 5.0, 7.0, 1.5]


def _dense_gcn(graph: Graph, weight: torch.Tensor) -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 written out densely: A[i, j] = total weight of edges j -> i (no self-loops)."""
    n = graph.num_nodes
    a = torch.zeros(n, n, dtype=torch.float64)
    a.index_put_((graph.destination, graph.source), weight, accumulate=True)
    a = a + torch.eye(n, dtype=torch.float64)
    d_inv_sqrt = a.sum(dim=1).pow(-0.5)
    return d_inv_sqrt[:, None] * a * d_inv_sqrt[None, :]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", generator_names())
def test_gcn_norm_matches_pyg(seed, name, dtype):
    graph = make_graph(name, NUM_NODES, seed=seed)
    graph = graph.with_edge_weight(_positive_weights(graph, seed))
    gold = gcn_norm(graph)
    baseline = gcn_norm(graph.to(weight_dtype=dtype))
    edge_index, candidate = pyg_gcn_norm(graph.edge_index, graph.edge_weight.to(dtype), graph.num_nodes)
    assert torch.equal(gold.edge_index, edge_index)
    assert_agrees(candidate, gold.edge_weight, baseline.edge_weight, name="gcn_norm weights")
    unweighted = gcn_norm(Graph(graph.edge_index, graph.num_nodes), dtype=torch.float64)
    _, candidate = pyg_gcn_norm(graph.edge_index, None, graph.num_nodes, dtype=dtype)
    assert_agrees(candidate, unweighted.edge_weight, name="gcn_norm unit weights")


@pytest.mark.parametrize("name", ["erdos_renyi", "power_law", "grid_2d", "isolated_nodes", "duplicate_edges"])
def test_gcn_norm_equals_the_dense_formula(seed, name):
    graph = make_graph(name, NUM_NODES, seed=seed)  # these families have no self-loops: A~ = A + I exactly
    weight = _positive_weights(graph, seed)
    normalized = gcn_norm(graph.with_edge_weight(weight))
    dense = torch.zeros(graph.num_nodes, graph.num_nodes, dtype=torch.float64)
    dense.index_put_((normalized.destination, normalized.source), normalized.edge_weight, accumulate=True)
    assert_agrees(dense, _dense_gcn(graph, weight), name="D^-1/2 (A+I) D^-1/2")


def test_gcn_norm_gives_zero_not_inf_at_zero_degree():
    # node 0 sends to node 1 but receives nothing: without self-loops its degree is 0
    graph = Graph(torch.tensor([[0, 2], [1, 1]]), 4)
    normalized = gcn_norm(graph, add_self_loops=False, dtype=torch.float64)
    assert normalized.edge_weight.tolist() == [0.0, 0.0]  # deg^-1/2 of sources 0 and 2 is 0
    assert gcn_norm(no_edges(3), add_self_loops=False, dtype=torch.float64).edge_weight.numel() == 0
    looped = gcn_norm(no_edges(3), dtype=torch.float64)
    assert looped.edge_weight.tolist() == [1.0, 1.0, 1.0]  # only self-loops: D = I


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("edge_index", "num_nodes", "error", "match"), [
    (torch.tensor([[0, 1], [1, 3]]), 3, ValueError, r"edge_index must hold node ids in \[0, num_nodes=3\)"),
    (torch.tensor([[0, -1], [1, 2]]), 3, ValueError, "edge_index .* negative index -1"),
    (torch.tensor([[0, 1, 2]]), 3, ValueError, r"edge_index must have shape \(2, E\)"),
    (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), 3, TypeError, "edge_index must be int32 or int64"),
    (torch.tensor([[0, 1], [1, 2]], dtype=torch.int16), 3, TypeError, "edge_index must be int32 or int64"),
    ([[0, 1], [1, 2]], 3, TypeError, "edge_index must be a torch.Tensor"),
    (torch.tensor([[0, 1], [1, 2]]), -1, ValueError, "num_nodes must be >= 0"),
    (torch.tensor([[0, 1], [1, 2]]), 3.0, TypeError, "num_nodes must be an int"),
])
def test_graph_rejects_bad_edge_index(edge_index, num_nodes, error, match):
    with pytest.raises(error, match=match):
        Graph(edge_index, num_nodes)


def test_graph_rejects_bad_edge_weight():
    edge_index = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"edge_weight must have shape \(E,\) = \(2,\)"):
        Graph(edge_index, 3, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="edge_weight must be a floating-point tensor"):
        Graph(edge_index, 3, torch.tensor([1, 2]))


@pytest.mark.parametrize(("rowptr", "col", "error", "match"), [
    (torch.tensor([0, 2, 1, 3]), torch.tensor([0, 1, 2]), ValueError, r"rowptr must be non-decreasing \(monotonic\)"),
    (torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2]), ValueError, "rowptr must end at the edge count E=3, got 2"),
    (torch.tensor([1, 1, 2, 3]), torch.tensor([0, 1, 2]), ValueError, "rowptr must start at 0"),
    (torch.tensor([0, 1, 3]), torch.tensor([0, 1, 2]), ValueError, "rowptr must have num_nodes \\+ 1 = 4 entries"),
    (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 3]), ValueError, r"col must hold node ids in \[0, num_nodes=3\)"),
    (torch.tensor([0, 1, 2, 3]), torch.tensor([0, -2, 1]), ValueError, "col .* negative index -2"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0, 1, 2]), TypeError, "rowptr must be int32 or int64"),
    (torch.tensor([[0, 1, 2, 3]]), torch.tensor([0, 1, 2]), ValueError, "rowptr must be 1-D"),
])
def test_compressed_validation_names_the_argument(rowptr, col, error, match):
    with pytest.raises(error, match=match):
        validate_compressed(rowptr, col, 3)
    with pytest.raises(error, match=match):
        compressed_to_coo(rowptr, col, 3)


def test_compressed_to_coo_rejects_unknown_orientation():
    with pytest.raises(ValueError, match="rows_are must be 'destination'"):
        compressed_to_coo(torch.tensor([0, 1]), torch.tensor([0]), 1, rows_are="rows")
