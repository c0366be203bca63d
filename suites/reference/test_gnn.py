"""reference/gnn.py against PyG and torch.sparse, on every generator of reference.graph_generators.

* aggregate (sum/mean/max, weighted, GCN-normalized): ``torch_geometric.utils.scatter`` over the
  gathered messages, PyG's ``gcn_norm``, and ``torch.sparse.mm`` for the sum; outputs and gradients.
* attention_aggregate: ``torch_geometric.utils.softmax`` + scatter, and an explicit per-destination loop.
* MessagePassing: ``torch_geometric.nn.MessagePassing`` subclasses with the same message (the default
  weighted message and a custom edge message).
* GCNConv: ``torch_geometric.nn.GCNConv`` with copied weights, and ``torch.sparse.mm`` on the
  normalized CSR matrix.
* GATConv: ``torch_geometric.nn.GATConv`` with copied weights (dropout 0), heads concatenated and averaged.
* the backend seams: lookups, errors, and every layer passing its ``backend`` to the seam (the registry itself:
  test_backends.py).
Every comparison goes through the agreement policy: gold = the reference in float64, candidate = the
oracle in the dtype under test, baseline = the reference in that dtype.
"""

import pytest
import torch
import torch.nn.functional as F
import torch_geometric.nn as pyg_nn
import torch_geometric.utils as pyg_utils
from oracle_pairs import gat_pair, gcn_pair
from torch_geometric.nn.conv.gcn_conv import gcn_norm as pyg_gcn_norm

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference import gnn
from reference.gnn import (
    GATConv,
    GCNConv,
    MessagePassing,
    aggregate,
    aggregation_backends,
    attention_aggregate,
    segment_reduce,
)
from reference.graph import Graph, gcn_norm
from reference.graph_generators import erdos_renyi, generator_names, make_graph

DTYPES = [torch.float64, torch.float32]
NUM_NODES = 37  # odd: not a multiple of any block a kernel might use
FEATURES = 19  # odd feature width: a kernel's column tile has a ragged edge


def _weighted_graph(name: str, seed: int, index_dtype=torch.int64) -> Graph:
    graph = make_graph(name, NUM_NODES, seed=seed, index_dtype=index_dtype)
    weight = random_tensor((graph.num_edges,), seed=seed + 7, dtype=torch.float64, distribution="uniform").abs() + 0.1
    return graph.with_edge_weight(weight)


def _pyg_aggregate(graph: Graph, x, weight, reduce):
    messages = x[graph.source.long()] * weight[:, None]  # (E, F)
    return pyg_utils.scatter(messages, graph.destination.long(), 0, graph.num_nodes, reduce)


def _grads(out, *inputs):
    cotangent = random_tensor(out.shape, seed=11, dtype=out.dtype)
    return torch.autograd.grad(out, inputs, cotangent)


def _assert_output_and_dx(name, gold, baseline, candidate):
    """Each argument is ``(output, x)``: the outputs agree, and so do their gradients with respect to x."""
    assert_agrees(candidate[0], gold[0], baseline[0], name=name)
    grads = [_grads(out, x)[0] for out, x in (candidate, gold, baseline)]
    assert_agrees(*grads, gradient=True, name=f"{name} dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("name", generator_names())
def test_aggregate_matches_pyg_scatter_with_gradients(seed, name, reduce, dtype):
    graph = _weighted_graph(name, seed)
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64).requires_grad_()
    weight = graph.edge_weight.clone().requires_grad_()
    gold = aggregate(graph, x, reduce=reduce, edge_weight=weight)
    x_low, weight_low = (t.detach().to(dtype).requires_grad_() for t in (x, weight))
    baseline = aggregate(graph, x_low, reduce=reduce, edge_weight=weight_low)
    x_pyg, weight_pyg = (t.detach().to(dtype).requires_grad_() for t in (x, weight))
    candidate = _pyg_aggregate(graph, x_pyg, weight_pyg, reduce)
    assert_agrees(candidate, gold, baseline, name=f"{reduce} aggregation")
    for grad_candidate, grad_gold, grad_baseline, what in zip(
        _grads(candidate, x_pyg, weight_pyg), _grads(gold, x, weight), _grads(baseline, x_low, weight_low),
        ("dx", "dw"), strict=True,
    ):
        assert_agrees(grad_candidate, grad_gold, grad_baseline, gradient=True, name=what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", generator_names())
def test_sum_aggregation_is_torch_sparse_mm(seed, name, dtype):
    graph = _weighted_graph(name, seed, index_dtype=torch.int32)
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64)
    csr = graph.csr()  # rows = destinations, col = sources, values in CSR order
    matrix = torch.sparse_csr_tensor(csr.rowptr.long(), csr.col.long(), graph.edge_weight[csr.perm.long()].to(dtype),
                                     (graph.num_nodes, graph.num_nodes))
    candidate = torch.sparse.mm(matrix, x.to(dtype))
    assert_agrees(candidate, aggregate(graph, x), aggregate(graph.to(weight_dtype=dtype), x.to(dtype)),
                  name="A @ X")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", generator_names())
def test_gcn_normalized_aggregation_matches_pyg_gcn_norm(seed, name, dtype):
    graph = _weighted_graph(name, seed)
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64)
    edge_index, weight = pyg_utils.add_remaining_self_loops(graph.edge_index, graph.edge_weight, 1.0,
                                                            graph.num_nodes)
    looped = Graph(edge_index, graph.num_nodes, weight)
    gold = aggregate(looped, x, normalize="gcn")
    baseline = aggregate(looped.to(weight_dtype=dtype), x.to(dtype), normalize="gcn")
    _, normalized = pyg_gcn_norm(edge_index, weight.to(dtype), graph.num_nodes, add_self_loops=False)
    candidate = _pyg_aggregate(looped, x.to(dtype), normalized, "sum")
    assert_agrees(candidate, gold, baseline, name="gcn-normalized sum")


def test_isolated_nodes_get_zero_for_every_reduction(seed):
    graph = Graph(torch.tensor([[0, 1, 1], [1, 2, 2]]), 4)  # nodes 0 and 3 receive nothing
    x = random_tensor((4, 5), seed=seed, dtype=torch.float64) - 10.0  # all negative: max must not be 0 by accident
    for reduce in ("sum", "mean", "max"):
        out = aggregate(graph, x, reduce=reduce)
        assert out[[0, 3]].eq(0).all(), reduce
        assert out[[1, 2]].lt(0).all(), reduce
    assert torch.equal(aggregate(graph, x, reduce="max")[2], x[1])  # a duplicate edge does not change the max
    assert torch.equal(aggregate(graph, x, reduce="mean")[2], x[1])  # ... nor the mean


def test_segment_reduce_reduces_generic_messages(seed):
    messages = random_tensor((6, 3, 2), seed=seed, dtype=torch.float64)  # per-edge messages with two feature dims
    index = torch.tensor([2, 0, 2, 2, 0, 4])
    for reduce in ("sum", "mean", "max"):
        expected = pyg_utils.scatter(messages, index, 0, 5, reduce)
        assert_agrees(expected, segment_reduce(messages, index, 5, reduce), name=reduce)


def _explicit_attention(graph: Graph, x, alpha_src, alpha_dst, slope):
    """Each destination alone: a dense softmax over the list of its incoming edges."""
    out = torch.zeros_like(x)
    for i in range(graph.num_nodes):
        incoming = (graph.destination == i).nonzero().flatten()
        if incoming.numel() == 0:
            continue
        sources = graph.source[incoming].long()
        scores = F.leaky_relu(alpha_src[sources] + alpha_dst[i], slope)  # (deg, H)
        out[i] = torch.einsum("eh,ehc->hc", torch.softmax(scores, dim=0), x[sources])
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", generator_names())
def test_attention_aggregate_matches_pyg_softmax_with_gradients(seed, name, dtype):
    graph = make_graph(name, NUM_NODES, seed=seed)
    heads, channels = 3, 5
    inputs = [random_tensor((graph.num_nodes, heads, channels), seed=seed, dtype=torch.float64),
              random_tensor((graph.num_nodes, heads), seed=seed + 1, dtype=torch.float64),
              random_tensor((graph.num_nodes, heads), seed=seed + 2, dtype=torch.float64)]
    gold_inputs = [t.clone().requires_grad_() for t in inputs]
    low_inputs = [t.to(dtype).requires_grad_() for t in inputs]
    pyg_inputs = [t.to(dtype).requires_grad_() for t in inputs]
    gold = attention_aggregate(graph, *gold_inputs)
    baseline = attention_aggregate(graph, *low_inputs)
    x, alpha_src, alpha_dst = pyg_inputs
    source, destination = graph.source.long(), graph.destination.long()
    scores = F.leaky_relu(alpha_src[source] + alpha_dst[destination], 0.2)  # (E, H)
    weights = pyg_utils.softmax(scores, destination, num_nodes=graph.num_nodes)
    candidate = pyg_utils.scatter(weights[..., None] * x[source], destination, 0, graph.num_nodes, "sum")
    assert_agrees(candidate, gold, baseline, name="attention aggregation")
    for grad_candidate, grad_gold, grad_baseline, what in zip(
        _grads(candidate, *pyg_inputs), _grads(gold, *gold_inputs), _grads(baseline, *low_inputs),
        ("dx", "dalpha_src", "dalpha_dst"), strict=True,
    ):
        assert_agrees(grad_candidate, grad_gold, grad_baseline, gradient=True, name=what)
    assert_agrees(_explicit_attention(graph, *inputs, 0.2).to(dtype), gold, baseline, name="explicit")


def test_attention_aggregate_survives_large_scores(seed):
    graph = make_graph("power_law", 60, seed=seed)
    x = random_tensor((60, 2, 4), seed=seed, dtype=torch.float64)
    alpha_src = random_tensor((60, 2), seed=seed + 1, dtype=torch.float64) * 500  # exp(500) overflows float64
    alpha_dst = random_tensor((60, 2), seed=seed + 2, dtype=torch.float64) * 500
    out = attention_aggregate(graph, x, alpha_src, alpha_dst, negative_slope=0.1)
    assert torch.isfinite(out).all()
    assert_agrees(_explicit_attention(graph, x, alpha_src, alpha_dst, 0.1), out, name="large scores")


def test_aggregation_never_builds_a_dense_matrix(seed):
    # 2M nodes: a dense N x N float64 matrix would need 32 TB, so this passes only in O(E + N) memory.
    n = 2_000_000
    graph = erdos_renyi(n, num_edges=1000, seed=seed)
    x = random_tensor((n, 2), seed=seed, dtype=torch.float32)
    out = aggregate(graph, x, reduce="mean", normalize="gcn")
    assert out.shape == (n, 2)
    alpha = random_tensor((n, 1), seed=seed + 1, dtype=torch.float32)
    assert attention_aggregate(graph, x[:, None, :], alpha, alpha).shape == (n, 1, 2)


# --------------------------------------------------------------------------------------------------
# MessagePassing
# --------------------------------------------------------------------------------------------------


class _PygWeighted(pyg_nn.MessagePassing):
    """PyG's MessagePassing with the message w_e * x_j."""

    def forward(self, x, edge_index, weight):
        return self.propagate(edge_index, x=x, weight=weight)

    def message(self, x_j, weight):
        return x_j * weight.view(-1, 1)


class _RelativeMessage(MessagePassing):
    """A custom message and update (EdgeConv-like without the MLP): x_i' = x_i + REDUCE w_e * (x_j - x_i)."""

    def message(self, x_i, x_j, edge_weight):
        return (x_j - x_i) * edge_weight[:, None]

    def update(self, aggregated, x):
        return x + aggregated


class _PygRelativeMessage(pyg_nn.MessagePassing):
    def forward(self, x, edge_index, weight):
        return x + self.propagate(edge_index, x=x, weight=weight)

    def message(self, x_i, x_j, weight):
        return (x_j - x_i) * weight[:, None]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("name", generator_names())
def test_message_passing_matches_pyg_for_default_and_custom_messages(seed, name, reduce, dtype):
    graph = _weighted_graph(name, seed)
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64)
    low = graph.to(weight_dtype=dtype)
    for ours, theirs in ((MessagePassing(reduce), _PygWeighted(aggr=reduce)),
                         (_RelativeMessage(reduce), _PygRelativeMessage(aggr=reduce))):
        gold = ours(graph, x)
        candidate = theirs(x.to(dtype), graph.edge_index, low.edge_weight)
        assert_agrees(candidate, gold, ours(low, x.to(dtype)), name=type(ours).__name__)


def test_message_passing_sends_only_the_default_message_through_the_seam(seed, monkeypatch):
    calls = []
    def recording(graph, x, **options):
        calls.append(options)
        return gnn._reference_aggregate(graph, x, **options)

    monkeypatch.setitem(gnn.AGGREGATE_BACKENDS.registered, "recording", recording)
    graph = _weighted_graph("power_law", seed)
    x = random_tensor((graph.num_nodes, 4), seed=seed, dtype=torch.float64)
    assert_agrees(MessagePassing("max", backend="recording")(graph, x), aggregate(graph, x, reduce="max"))
    assert len(calls) == 1 and calls[0]["reduce"] == "max"
    _RelativeMessage("sum", backend="recording")(graph, x)  # a custom message is reduced by segment_reduce
    assert len(calls) == 1


def test_message_passing_rejects_bad_arguments(seed):
    graph = _weighted_graph("erdos_renyi", seed)
    x = random_tensor((graph.num_nodes, 4), seed=seed, dtype=torch.float64)
    with pytest.raises(ValueError, match="reduce must be one of"):
        MessagePassing("min")
    with pytest.raises(ValueError, match="normalize is only supported with the default message"):
        _RelativeMessage().propagate(graph, x, normalize="gcn")
    with pytest.raises(ValueError, match=f"edge_attr must be a tensor with E={graph.num_edges} rows"):
        MessagePassing().propagate(graph, x, edge_attr=x)
    with pytest.raises(ValueError, match="x must have num_nodes"):
        MessagePassing()(graph, x[1:])


# --------------------------------------------------------------------------------------------------
# GCNConv
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", generator_names())
def test_gcn_matches_pyg_gcnconv_with_gradients(seed, name, dtype):
    graph = _weighted_graph(name, seed)
    ours, theirs = gcn_pair(seed, FEATURES, 7)
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64).requires_grad_()
    gold = ours(graph, x)
    ours_low, theirs_low = ours.to(dtype), theirs.to(dtype)
    x_low, x_pyg = (x.detach().to(dtype).requires_grad_() for _ in range(2))
    baseline = ours_low(graph.to(weight_dtype=dtype), x_low)
    candidate = theirs_low(x_pyg, graph.edge_index, graph.edge_weight.to(dtype))
    _assert_output_and_dx("GCNConv", (gold, x), (baseline, x_low), (candidate, x_pyg))
    # the weight gradient: compare in float64 only, where both layers hold the same parameters
    if dtype == torch.float64:
        dw_ours, = torch.autograd.grad(ours(graph, x).square().sum(), ours.lin.weight)
        dw_theirs, = torch.autograd.grad(theirs(x, graph.edge_index, graph.edge_weight).square().sum(),
                                         theirs.lin.weight)
        assert_agrees(dw_theirs, dw_ours, gradient=True, name="dW")


@pytest.mark.parametrize("options", [
    {"improved": True},  # A + 2I
    {"add_self_loops": False},  # zero-degree nodes: deg^-1/2 = 0
    {"normalize": False},  # plain A X W (self-loops follow normalize, as in PyG)
], ids=lambda o: next(iter(o)))
@pytest.mark.parametrize("name", ["power_law", "self_loops", "isolated_nodes"])
def test_gcn_options_match_pyg(seed, name, options):
    graph = _weighted_graph(name, seed)
    ours, theirs = gcn_pair(seed, FEATURES, 5, **options)
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64)
    assert_agrees(theirs(x, graph.edge_index, graph.edge_weight), ours(graph, x), name=str(options))
    unweighted = Graph(graph.edge_index, graph.num_nodes)
    # PyG 2.8 ignores improved=True when edge_weight is None (add_remaining_self_loops drops the fill value
    # without edge attributes, so the loops weigh 1); explicit unit weights give its A + 2I.
    ones = torch.ones(graph.num_edges, dtype=torch.float64) if options.get("improved") else None
    assert_agrees(theirs(x, graph.edge_index, ones), ours(unweighted, x), name=f"{options}, unit weights")


def test_gcn_without_normalization_but_with_self_loops_is_pyg_on_the_looped_graph(seed):
    # PyG 2.8 refuses GCNConv(normalize=False, add_self_loops=True); ours computes (A + I) X W + b, which is
    # PyG's unnormalized layer applied to the edge list after its add_remaining_self_loops.
    graph = _weighted_graph("self_loops", seed)
    ours, theirs = gcn_pair(seed, FEATURES, 5, normalize=False)
    ours.add_self_loops = True
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64)
    looped = pyg_utils.add_remaining_self_loops(graph.edge_index, graph.edge_weight, 1.0, graph.num_nodes)
    assert_agrees(theirs(x, *looped), ours(graph, x), name="(A + I) X W")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", generator_names())
def test_gcn_is_sparse_mm_on_the_normalized_csr_matrix(seed, name, dtype):
    graph = _weighted_graph(name, seed)
    ours = GCNConv(FEATURES, 6).double()
    with torch.no_grad():
        ours.bias.copy_(random_tensor((6,), seed=seed + 3, dtype=torch.float64))
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64)
    normalized = gcn_norm(graph)
    csr = normalized.csr()
    a_hat = torch.sparse_csr_tensor(csr.rowptr, csr.col, normalized.edge_weight[csr.perm].to(dtype),
                                    (graph.num_nodes, graph.num_nodes))  # D^-1/2 (A+I) D^-1/2, rows = destinations
    weight, bias = ours.lin.weight.detach().to(dtype), ours.bias.detach().to(dtype)
    candidate = torch.sparse.mm(a_hat, x.to(dtype) @ weight.T) + bias
    gold = ours(graph, x)
    baseline = ours.to(dtype)(graph.to(weight_dtype=dtype), x.to(dtype))
    assert_agrees(candidate, gold, baseline, name="sparse.mm(A_hat, X W) + b")


# --------------------------------------------------------------------------------------------------
# GATConv
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("concat", [True, False], ids=["concat", "mean"])
@pytest.mark.parametrize("name", generator_names())
def test_gat_matches_pyg_gatconv_with_gradients(seed, name, concat, dtype):
    graph = make_graph(name, NUM_NODES, seed=seed)
    ours, theirs = gat_pair(seed, FEATURES, 5, 3, concat=concat)
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64).requires_grad_()
    gold = ours(graph, x)
    x_low, x_pyg = (x.detach().to(dtype).requires_grad_() for _ in range(2))
    baseline = ours.to(dtype)(graph, x_low)
    candidate = theirs.to(dtype)(x_pyg, graph.edge_index)
    assert candidate.shape == (graph.num_nodes, 15 if concat else 5)
    _assert_output_and_dx("GATConv", (gold, x), (baseline, x_low), (candidate, x_pyg))
    if dtype == torch.float64:
        ours_loss, theirs_loss = ours(graph, x).square().sum(), theirs(x, graph.edge_index).square().sum()
        for ours_param, theirs_param in ((ours.att_src, theirs.att_src), (ours.lin.weight, theirs.lin.weight)):
            grad_ours, = torch.autograd.grad(ours_loss, ours_param, retain_graph=True)
            grad_theirs, = torch.autograd.grad(theirs_loss, theirs_param, retain_graph=True)
            assert_agrees(grad_theirs.view_as(grad_ours), grad_ours, gradient=True, name="parameter gradient")


@pytest.mark.parametrize("name", ["self_loops", "isolated_nodes", "duplicate_edges", "no_edges"])
def test_gat_without_self_loops_matches_pyg(seed, name):
    graph = make_graph(name, NUM_NODES, seed=seed)
    ours, theirs = gat_pair(seed, FEATURES, 4, 2, add_self_loops=False)
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed, dtype=torch.float64)
    assert_agrees(theirs(x, graph.edge_index), ours(graph, x), name="GATConv, no self-loops")


def test_layers_pass_their_backend_to_the_seam(seed, monkeypatch):
    calls = []
    monkeypatch.setitem(gnn.AGGREGATE_BACKENDS.registered, "recording",
                        lambda graph, x, **options: calls.append("aggregate") or gnn._reference_aggregate(
                            graph, x, **options))
    monkeypatch.setitem(gnn.ATTENTION_AGGREGATE_BACKENDS.registered, "recording",
                        lambda *args, **options: calls.append("attention") or gnn._reference_attention_aggregate(
                            *args, **options))
    graph = make_graph("erdos_renyi", 20, seed=seed)
    x = random_tensor((20, 6), seed=seed, dtype=torch.float64)
    gcn = GCNConv(6, 3, backend="recording").double()
    gat = GATConv(6, 3, 2, backend="recording").double()
    gcn(graph, x)
    gat(graph, x)
    assert calls == ["aggregate", "attention"]


def test_layers_reject_bad_arguments(seed):
    graph = make_graph("erdos_renyi", 12, seed=seed)
    x = random_tensor((12, 6), seed=seed, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x must have in_channels=5 columns, got shape \(12, 6\)"):
        GCNConv(5, 3).double()(graph, x)
    with pytest.raises(ValueError, match=r"x must have in_channels=5 columns"):
        GATConv(5, 3).double()(graph, x)
    with pytest.raises(ValueError, match="x must have num_nodes=12 rows"):
        GATConv(6, 3).double()(graph, x[:11])
    with pytest.raises(ValueError, match="heads must be >= 1"):
        GATConv(6, 3, heads=0)


# --------------------------------------------------------------------------------------------------
# The backend registry
# --------------------------------------------------------------------------------------------------


def test_reference_backend_is_listed_for_both_seams():
    assert "reference" in aggregation_backends()
    assert "reference" in aggregation_backends("aggregate")
    assert "reference" in aggregation_backends("attention_aggregate")
    with pytest.raises(ValueError, match="seam must be"):
        aggregation_backends("spmm")


def test_unknown_backend_names_the_choices(seed):
    graph = make_graph("erdos_renyi", 10, seed=seed)
    x = random_tensor((10, 4), seed=seed, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"backend must be one of \[.*'reference'.*\] for aggregate, got 'cuda'"):
        aggregate(graph, x, backend="cuda")
    with pytest.raises(ValueError, match="for attention_aggregate, got 'cuda'"):
        attention_aggregate(graph, x[:, None], x[:, :1], x[:, :1], backend="cuda")


def test_registered_backend_receives_validated_arguments(seed, monkeypatch):
    calls = []

    def recording_backend(graph, x, *, reduce, edge_weight, normalize):
        calls.append((reduce, edge_weight, normalize))
        return gnn._reference_aggregate(graph, x, reduce=reduce, edge_weight=edge_weight, normalize=normalize)

    monkeypatch.setitem(gnn.AGGREGATE_BACKENDS.registered, "recording", recording_backend)
    graph = _weighted_graph("erdos_renyi", seed)
    x = random_tensor((graph.num_nodes, 3), seed=seed, dtype=torch.float32)
    out = aggregate(graph, x, reduce="mean", backend="recording")
    assert_agrees(out, aggregate(graph.to(weight_dtype=torch.float64), x.double(), reduce="mean"))
    (reduce, edge_weight, normalize), = calls
    assert reduce == "mean" and normalize is None and edge_weight.dtype == torch.float32  # cast to x's dtype
    assert "recording" in aggregation_backends("aggregate")


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_aggregate_rejects_bad_arguments(seed):
    graph = make_graph("erdos_renyi", 10, seed=seed)
    x = random_tensor((10, 4), seed=seed, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x must have num_nodes=10 rows, got shape \(9, 4\)"):
        aggregate(graph, x[:9])
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        aggregate(graph, x[:, :, None])
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        aggregate(graph, x.long())
    with pytest.raises(ValueError, match="reduce must be one of"):
        aggregate(graph, x, reduce="min")
    with pytest.raises(ValueError, match="normalize must be None or 'gcn'"):
        aggregate(graph, x, normalize="rw")
    with pytest.raises(ValueError, match=r"edge_weight must have shape \(E,\)"):
        aggregate(graph, x, edge_weight=x[:, 0])
    with pytest.raises(TypeError, match="graph must be a reference.graph.Graph"):
        aggregate(graph.edge_index, x)


def test_attention_aggregate_rejects_bad_arguments(seed):
    graph = make_graph("erdos_renyi", 10, seed=seed)
    x = random_tensor((10, 2, 4), seed=seed, dtype=torch.float64)
    alpha = random_tensor((10, 2), seed=seed + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        attention_aggregate(graph, x[:, 0], alpha, alpha)
    with pytest.raises(ValueError, match=r"alpha_src must have num_nodes=10 rows"):
        attention_aggregate(graph, x, alpha[:7], alpha)
    with pytest.raises(ValueError, match=r"alpha_dst must have shape \(N, H\) = \(10, 2\)"):
        attention_aggregate(graph, x, alpha, alpha[:, :1])
    with pytest.raises(TypeError, match="alpha_dst must have x's dtype"):
        attention_aggregate(graph, x, alpha, alpha.float())
    with pytest.raises(ValueError, match="negative_slope must be a non-negative number"):
        attention_aggregate(graph, x, alpha, alpha, negative_slope=-0.2)
