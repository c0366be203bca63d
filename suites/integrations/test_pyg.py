"""fusebench/integrations/pyg.py: drop-in GCNConv / GATConv against PyG's own layers.

Every check: gold = the PyG layer (or model) in float64, baseline = the same PyG layer in the dtype under
test, candidate = the drop-in built from it by ``swap_convs`` (same arguments, same weights) in that dtype,
on every graph generator, with the kernels (``backend="triton"``) and with the plain reference seam.
"""

import copy

import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric.nn import models as pyg_models
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from fusebench.integrations.pyg import GATConv, GCNConv, swap_convs
from reference.gnn import aggregation_backends
from reference.graph_generators import generator_names, make_graph

NUM_NODES = 37  # odd: not a multiple of any block a kernel might use
FEATURES = 19  # odd feature width: a ragged column tile
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(params=["triton", "reference"])
def backend(request):
    seams = ("aggregate", "attention_aggregate")
    if any(request.param not in aggregation_backends(seam) for seam in seams):
        pytest.skip(f"backend {request.param!r} is not registered for both reference.gnn seams here "
                    "(kernels/spmm.py and kernels/gat.py not present)")
    return request.param


def _randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """float64, every parameter redrawn (PyG starts biases at 0, which would hide a dropped bias)."""
    module = module.double()
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(module.named_parameters())):
            fan_in = p.shape[-1] if p.dim() >= 2 else 1
            p.copy_(random_tensor(p.shape, seed=seed + 13 * i, dtype=torch.float64, scale=fan_in**-0.5))
    return module.eval()


def _graph_inputs(name, seed):
    graph = make_graph(name, NUM_NODES, seed=seed)
    weight = random_tensor((graph.num_edges,), seed=seed + 7, dtype=torch.float64, distribution="uniform").abs() + 0.1
    x = random_tensor((graph.num_nodes, FEATURES), seed=seed + 8, dtype=torch.float64)
    return graph, weight, x


def _run(module, dtype, x, *args, grad=False):
    """(out, dx) of ``module`` in ``dtype``; floating args are cast, dx under a fixed random cotangent."""
    module = copy.deepcopy(module).to(dtype)
    x = x.detach().to(dtype).requires_grad_(grad)
    args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    out = module(x, *args)
    if not grad:
        return out.detach(), None
    cotangent = random_tensor(out.shape, seed=5, dtype=torch.float64).to(dtype)
    dx, = torch.autograd.grad(out, x, cotangent)
    return out.detach(), dx


def _agree(candidate_module, pyg_module, dtype, x, *args, name, grad=True):
    gold, gold_dx = _run(pyg_module, torch.float64, x, *args, grad=grad)
    baseline, baseline_dx = _run(pyg_module, dtype, x, *args, grad=grad)
    candidate, candidate_dx = _run(candidate_module, dtype, x, *args, grad=grad)
    verdict = assert_agrees(candidate, gold, baseline, name=name)
    if grad:
        assert_agrees(candidate_dx, gold_dx, baseline_dx, gradient=True, name=f"{name} dx")
    return verdict


# --------------------------------------------------------------------------------------------------
# Layers, on every graph generator
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", generator_names())
def test_gcn_matches_pyg_on_every_generator(seed, name, dtype, backend):
    graph, weight, x = _graph_inputs(name, seed)
    theirs = _randomized(pyg_nn.GCNConv(FEATURES, 7), seed)
    ours = swap_convs(theirs, backend=backend)
    assert isinstance(ours, GCNConv) and ours.backend == backend
    _agree(ours, theirs, dtype, x, graph.edge_index, weight, name=f"GCNConv on {name}")


@pytest.mark.parametrize("options", [dict(improved=True), dict(add_self_loops=False), dict(normalize=False),
                                     dict(bias=False)], ids=lambda o: next(iter(o)))
def test_gcn_options_match_pyg(seed, options, backend):
    graph, weight, x = _graph_inputs("self_loops", seed)  # existing loops: remaining-loop rule and improved
    theirs = _randomized(pyg_nn.GCNConv(FEATURES, 5, **options), seed)
    ours = swap_convs(theirs, backend=backend)
    _agree(ours, theirs, torch.float32, x, graph.edge_index, weight, name=f"GCNConv {options}", grad=False)
    _agree(ours, theirs, torch.float32, x, graph.edge_index, name=f"GCNConv {options} unweighted", grad=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", generator_names())
def test_gat_matches_pyg_on_every_generator(seed, name, dtype, backend):
    graph, _, x = _graph_inputs(name, seed)
    theirs = _randomized(pyg_nn.GATConv(FEATURES, 5, heads=3), seed)
    ours = swap_convs(theirs, backend=backend)
    assert isinstance(ours, GATConv) and ours.backend == backend
    _agree(ours, theirs, dtype, x, graph.edge_index, name=f"GATConv on {name}")


@pytest.mark.parametrize("options", [dict(concat=False), dict(add_self_loops=False), dict(negative_slope=0.01)],
                         ids=lambda o: next(iter(o)))
def test_gat_options_match_pyg(seed, options, backend):
    graph, _, x = _graph_inputs("duplicate_edges", seed)
    theirs = _randomized(pyg_nn.GATConv(FEATURES, 4, heads=2, **options), seed)
    _agree(swap_convs(theirs, backend=backend), theirs, torch.float32, x, graph.edge_index, name=f"GATConv {options}",
           grad=False)


# --------------------------------------------------------------------------------------------------
# Two-layer models from torch_geometric.nn.models with the convs swapped
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["GCN", "GAT"])
@pytest.mark.parametrize("name", ["power_law", "isolated_nodes"])
def test_two_layer_models_with_swapped_convs_match_pyg(seed, model_name, name, backend, record_property):
    graph, weight, x = _graph_inputs(name, seed)
    if model_name == "GCN":
        theirs = pyg_models.GCN(FEATURES, 16, num_layers=2, out_channels=6)
        args = (graph.edge_index, weight)
    else:
        theirs = pyg_models.GAT(FEATURES, 16, num_layers=2, out_channels=6, heads=2, dropout=0.5)  # eval: no dropout
        args = (graph.edge_index,)
    theirs = _randomized(theirs, seed)
    ours = swap_convs(copy.deepcopy(theirs), backend=backend)
    kinds = {type(conv).__name__: conv.__module__ for conv in ours.convs}
    assert kinds == {model_name + "Conv": "fusebench.integrations.pyg"}
    verdict = _agree(ours, theirs, torch.float32, x, *args, name=f"{model_name} model on {name}")
    record_property("agreement_ratio", verdict.ratio)


# --------------------------------------------------------------------------------------------------
# PyG's input forms and state dicts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["csr", "coo"])
@pytest.mark.parametrize("layer", ["GCNConv", "GATConv"])
def test_sparse_adjacency_inputs_match_pyg(seed, layout, layer, backend):
    graph, weight, x = _graph_inputs("self_loops", seed)  # PyG loops a sparse GCN input as A + I: loops gain weight
    to_sparse = to_torch_csr_tensor if layout == "csr" else to_torch_coo_tensor
    adj_t = to_sparse(graph.edge_index.flip(0), weight, size=(NUM_NODES, NUM_NODES))  # rows are destinations
    pyg_layer = pyg_nn.GCNConv(FEATURES, 6) if layer == "GCNConv" else pyg_nn.GATConv(FEATURES, 3, heads=2)
    theirs = _randomized(pyg_layer, seed)
    ours = swap_convs(theirs, backend=backend)
    gold = theirs(x, adj_t)
    candidate = ours.float()(x.float(), adj_t.to(torch.float32))
    baseline = copy.deepcopy(theirs).float()(x.float(), adj_t.to(torch.float32))
    assert_agrees(candidate, gold, baseline, name=f"{layer} on a sparse {layout} adj_t")


def test_int32_edge_index_and_state_dicts_are_pyg_s(seed):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    for theirs, ours in ((pyg_nn.GCNConv(FEATURES, 6), GCNConv(FEATURES, 6, backend="reference")),
                         (pyg_nn.GATConv(FEATURES, 3, heads=2), GATConv(FEATURES, 3, heads=2, backend="reference"))):
        theirs = _randomized(theirs, seed)
        shapes = {k: v.shape for k, v in theirs.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
        ours.double().load_state_dict(theirs.state_dict())  # strict: PyG's keys and shapes load as they are
        args = (weight,) if isinstance(theirs, pyg_nn.GCNConv) else ()
        gold = theirs(x, graph.edge_index, *args)
        assert_agrees(ours(x, graph.edge_index.int(), *args), gold, name=f"{type(ours).__name__} int32")


def test_cached_gcn_keeps_the_first_graph_like_pyg(seed):
    graph, weight, x = _graph_inputs("power_law", seed)
    other, other_weight, _ = _graph_inputs("grid_2d", seed)
    theirs = _randomized(pyg_nn.GCNConv(FEATURES, 5, cached=True), seed)
    ours = swap_convs(theirs, backend="reference")
    for edge_index, w in ((graph.edge_index, weight), (other.edge_index[:, :5], other_weight[:5])):
        assert_agrees(ours(x, edge_index, w), theirs(x, edge_index, w), name="cached GCNConv")
    ours.reset_cache()
    uncached = pyg_nn.GCNConv(FEATURES, 5).double()
    uncached.load_state_dict(theirs.state_dict())
    x_other = x[:other.num_nodes]
    assert_agrees(ours(x_other, other.edge_index, other_weight), uncached(x_other, other.edge_index, other_weight),
                  name="GCNConv after reset_cache")


def test_torch_sparse_sparsetensor_input(seed):
    torch_sparse = pytest.importorskip("torch_sparse", reason="torch_sparse is not installed here")
    graph, weight, x = _graph_inputs("power_law", seed)
    adj_t = torch_sparse.SparseTensor(row=graph.edge_index[1], col=graph.edge_index[0], value=weight,
                                      sparse_sizes=(NUM_NODES, NUM_NODES))
    theirs = _randomized(pyg_nn.GCNConv(FEATURES, 5), seed)
    assert_agrees(swap_convs(theirs, backend="reference")(x, adj_t), theirs(x, adj_t), name="SparseTensor")


# --------------------------------------------------------------------------------------------------
# What the drop-in does not support raises, naming it
# --------------------------------------------------------------------------------------------------


def test_unsupported_options_raise_naming_them(seed):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    with pytest.raises(NotImplementedError, match=r"edge features \(edge_dim=3\)"):
        GATConv(FEATURES, 4, edge_dim=3)
    with pytest.raises(NotImplementedError, match=r"residual=True"):
        GATConv(FEATURES, 4, residual=True)
    with pytest.raises(NotImplementedError, match=r"bipartite inputs \(in_channels as a pair\)"):
        GATConv((FEATURES, 5), 4)
    with pytest.raises(NotImplementedError, match=r"aggr='mean'"):
        GCNConv(FEATURES, 4, aggr="mean")
    with pytest.raises(ValueError, match=r"lazy in_channels=-1 is not supported"):
        GCNConv(-1, 4)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['node_dim'\]"):
        GCNConv(FEATURES, 4, node_dim=0)
    with pytest.raises(ValueError, match=r"add_self_loops=True with normalize=False"):
        GCNConv(FEATURES, 4, normalize=False, add_self_loops=True)
    gat = GATConv(FEATURES, 4, heads=2, dropout=0.3, backend="reference").double()
    with pytest.raises(NotImplementedError, match=r"attention dropout in training mode \(dropout=0.3"):
        gat.train()(x, graph.edge_index)
    gat.eval()
    with pytest.raises(NotImplementedError, match=r"return_attention_weights=True"):
        gat(x, graph.edge_index, return_attention_weights=True)
    with pytest.raises(NotImplementedError, match=r"edge features \(edge_attr\)"):
        gat(x, graph.edge_index, edge_attr=weight[:, None])
    with pytest.raises(NotImplementedError, match=r"bipartite inputs \(x as a pair"):
        gat((x, x), graph.edge_index)
    with pytest.raises(NotImplementedError, match=r"size=\(37, 5\)"):
        gat(x, graph.edge_index, size=(NUM_NODES, 5))


def test_bad_inputs_raise_clear_errors(seed):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    gcn = GCNConv(FEATURES, 4, backend="reference").double()
    with pytest.raises(ValueError, match=r"x must be a \(N, in_channels=19\) tensor, got \(37, 5\)"):
        gcn(x[:, :5], graph.edge_index)
    adj_t = to_torch_csr_tensor(graph.edge_index.flip(0), weight, size=(NUM_NODES, NUM_NODES))
    with pytest.raises(ValueError, match=r"edge_weight must be None with a sparse adjacency"):
        gcn(x, adj_t, weight)
    with pytest.raises(ValueError, match=r"must have shape \(N, N\) = \(36, 36\)"):
        gcn(x[:36], adj_t)
    with pytest.raises(NotImplementedError, match=r"torch.sparse_csc"):
        gcn(x, adj_t.to_sparse_csc())
    with pytest.raises(TypeError, match=r"edge_index must be a \(2, E\) tensor"):
        gcn(x, graph.edge_index.tolist())
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        swap_convs("GCN")
    with pytest.raises(ValueError, match=r"Linear holds no torch_geometric GCNConv or GATConv"):
        swap_convs(torch.nn.Linear(3, 3))
