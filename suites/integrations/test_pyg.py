"""fusebench/integrations/pyg.py: drop-in GCNConv / GATConv against PyG's own layers.

Every numerical check: gold = the PyG layer (or model) in float64, baseline = the same PyG layer in the dtype
under test, candidate = the drop-in built from it by ``swap_convs`` (same arguments, same weights) in that
dtype, on every graph generator, with the kernels (``backend="triton"``) and with the plain reference seam.

The second half checks, in our own words, each behaviour PyG's own test files for these layers check
(``test/nn/conv/test_gcn_conv.py`` and ``test_gat_conv.py`` of PyG 2.8): ``repr``, edge_index vs sparse
adjacency inputs, ``cached`` state, ``decomposed_layers``, sparse input features, static graphs, ``flow``,
``size``, empty graphs, return_attention_weights / residual / edge features / bipartite inputs (PyG's path,
warned), TorchScript, plus hooks and ``explain``, and that the fused kernel is what runs otherwise.
"""

import copy
import warnings

import pytest
import torch
import torch_geometric.nn as pyg_nn
from oracle_pairs import draw_gat_input
from torch_geometric.nn import models as pyg_models
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor, randomize_parameters
from fusebench.integrations import pyg as drop_in
from fusebench.integrations.pyg import GATConv, GCNConv, swap_convs
from reference import gnn
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
    if backend == "reference" and dtype == torch.bfloat16:
        # The reference backend shares PyG's Linear and aggregation order, so its bfloat16 dx can equal PyG's
        # bit for bit: PyG in bfloat16 is then no independent baseline (the policy refuses it). float32 checks it.
        pytest.skip("the reference backend's bfloat16 run is PyG's own computation; checked in float32")
    graph, weight, x = _graph_inputs(name, seed)
    theirs = randomize_parameters(pyg_nn.GCNConv(FEATURES, 7).double(), seed).eval()
    ours = swap_convs(theirs, backend=backend)
    assert isinstance(ours, GCNConv) and ours.backend == backend
    _agree(ours, theirs, dtype, x, graph.edge_index, weight, name=f"GCNConv on {name}")


@pytest.mark.parametrize("options", [dict(improved=True), dict(add_self_loops=False), dict(normalize=False),
                                     dict(bias=False)], ids=lambda o: next(iter(o)))
def test_gcn_options_match_pyg(seed, options, backend):
    graph, weight, x = _graph_inputs("self_loops", seed)  # existing loops: remaining-loop rule and improved
    theirs = randomize_parameters(pyg_nn.GCNConv(FEATURES, 5, **options).double(), seed).eval()
    ours = swap_convs(theirs, backend=backend)
    _agree(ours, theirs, torch.float32, x, graph.edge_index, weight, name=f"GCNConv {options}", grad=False)
    _agree(ours, theirs, torch.float32, x, graph.edge_index, name=f"GCNConv {options} unweighted", grad=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", generator_names())
def test_gat_matches_pyg_on_every_generator(seed, name, dtype, backend):
    graph, _, _ = _graph_inputs(name, seed)
    theirs = randomize_parameters(pyg_nn.GATConv(FEATURES, 5, heads=3).double(), seed).eval()
    x = draw_gat_input(theirs, graph.edge_index, (NUM_NODES, FEATURES), seed=seed + 8, dtype=dtype)  # off the kink
    ours = swap_convs(theirs, backend=backend)
    assert isinstance(ours, GATConv) and ours.backend == backend
    _agree(ours, theirs, dtype, x, graph.edge_index, name=f"GATConv on {name}")


@pytest.mark.parametrize("options", [dict(concat=False), dict(add_self_loops=False), dict(negative_slope=0.01)],
                         ids=lambda o: next(iter(o)))
def test_gat_options_match_pyg(seed, options, backend):
    graph, _, x = _graph_inputs("duplicate_edges", seed)
    theirs = randomize_parameters(pyg_nn.GATConv(FEATURES, 4, heads=2, **options).double(), seed).eval()
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
    theirs = randomize_parameters(theirs.double(), seed).eval()
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
    theirs = randomize_parameters(pyg_layer.double(), seed).eval()
    ours = swap_convs(theirs, backend=backend)
    gold = theirs(x, adj_t)
    candidate = ours.float()(x.float(), adj_t.to(torch.float32))
    baseline = copy.deepcopy(theirs).float()(x.float(), adj_t.to(torch.float32))
    assert_agrees(candidate, gold, baseline, name=f"{layer} on a sparse {layout} adj_t")


def test_int32_edge_index_and_state_dicts_are_pyg_s(seed):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    for theirs, ours in ((pyg_nn.GCNConv(FEATURES, 6), GCNConv(FEATURES, 6, backend="reference")),
                         (pyg_nn.GATConv(FEATURES, 3, heads=2), GATConv(FEATURES, 3, heads=2, backend="reference"))):
        theirs = randomize_parameters(theirs.double(), seed).eval()
        shapes = {k: v.shape for k, v in theirs.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
        ours.double().load_state_dict(theirs.state_dict())  # strict: PyG's keys and shapes load as they are
        args = (weight,) if isinstance(theirs, pyg_nn.GCNConv) else ()
        gold = theirs(x, graph.edge_index, *args)
        assert_agrees(ours(x, graph.edge_index.int(), *args), gold, name=f"{type(ours).__name__} int32")


def test_torch_sparse_sparsetensor_input(seed):
    torch_sparse = pytest.importorskip("torch_sparse", reason="torch_sparse is not installed here")
    graph, weight, x = _graph_inputs("power_law", seed)
    adj_t = torch_sparse.SparseTensor(row=graph.edge_index[1], col=graph.edge_index[0], value=weight,
                                      sparse_sizes=(NUM_NODES, NUM_NODES))
    theirs = randomize_parameters(pyg_nn.GCNConv(FEATURES, 5).double(), seed).eval()
    assert_agrees(swap_convs(theirs, backend="reference")(x, adj_t), theirs(x, adj_t), name="SparseTensor")


# --------------------------------------------------------------------------------------------------
# PyG's own behaviours (what test_gcn_conv.py / test_gat_conv.py check), and the fused path running
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def seam_calls(monkeypatch):
    """Counts the drop-ins' calls into the two reference.gnn seams (the fused path), by seam name."""
    calls = {"aggregate": 0, "attention_aggregate": 0}
    for name in calls:
        original = getattr(gnn, name)

        def counting(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(gnn, name, counting)
    return calls


def _pair(pyg_class, seed, *args, backend="reference", **kwargs):
    """(theirs, ours): a float64 PyG layer with random parameters and the drop-in with the same weights."""
    theirs = randomize_parameters(pyg_class(*args, **kwargs).double(), seed).eval()
    return theirs, swap_convs(copy.deepcopy(theirs), backend=backend)


def test_repr_is_pyg_s():
    assert str(GCNConv(16, 32)) == str(pyg_nn.GCNConv(16, 32)) == "GCNConv(16, 32)"
    assert str(GATConv(8, 32, heads=2)) == str(pyg_nn.GATConv(8, 32, heads=2)) == "GATConv(8, 32, heads=2)"
    assert str(GATConv((8, 16), 32, heads=2)) == "GATConv((8, 16), 32, heads=2)"
    assert isinstance(GCNConv(4, 4), pyg_nn.GCNConv) and isinstance(GATConv(4, 4), pyg_nn.GATConv)


@pytest.mark.parametrize("layer", ["GCNConv", "GATConv"])
def test_edge_index_and_sparse_adjacency_run_the_kernel_and_agree(seed, layer, seam_calls):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    if layer == "GCNConv":
        theirs, ours = _pair(pyg_nn.GCNConv, seed, FEATURES, 6)
        seam, args = "aggregate", (weight,)
    else:
        theirs, ours = _pair(pyg_nn.GATConv, seed, FEATURES, 3, heads=2)
        seam, args = "attention_aggregate", ()
    gold = theirs(x, graph.edge_index, *args)
    assert_agrees(ours(x, graph.edge_index, *args), gold, name=f"{layer} edge_index")
    assert seam_calls[seam] == 1  # the edge_index form ran fused (PyG's propagate path)
    adj_t = to_torch_csr_tensor(graph.edge_index.flip(0), *args, size=(NUM_NODES, NUM_NODES))
    assert_agrees(ours(x, adj_t), gold, name=f"{layer} adj_t")
    assert seam_calls[seam] == 2  # and so did the adjacency form (message_and_aggregate for GCN)


def test_cached_gcn_state_is_pyg_s(seed):
    graph, weight, x = _graph_inputs("power_law", seed)
    other, other_weight, _ = _graph_inputs("grid_2d", seed)
    theirs, ours = _pair(pyg_nn.GCNConv, seed, FEATURES, 5, cached=True)
    for edge_index, w in ((graph.edge_index, weight), (other.edge_index[:, :5], other_weight[:5])):
        assert_agrees(ours(x, edge_index, w), theirs(x, edge_index, w), name="cached GCNConv")  # keeps graph 1
    assert ours._cached_edge_index is not None
    cached_index, cached_weight = ours._cached_edge_index
    assert torch.equal(cached_index, theirs._cached_edge_index[0])
    assert_agrees(cached_weight, theirs._cached_edge_index[1], name="cached normalized weights")
    ours.reset_parameters(), theirs.reset_parameters()  # PyG forgets the cache there
    assert ours._cached_edge_index is None


def test_decomposed_layers_give_the_undecomposed_result(seed, seam_calls):
    graph, weight, x = _graph_inputs("power_law", seed)
    theirs, ours = _pair(pyg_nn.GCNConv, seed, FEATURES, 8)
    ours.decomposed_layers = 2
    assert_agrees(ours(x, graph.edge_index, weight), theirs(x, graph.edge_index, weight), name="decomposed")
    assert seam_calls["aggregate"] == 1  # fused: no (E, F) messages to decompose


def test_sparse_input_features(seed):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    theirs, ours = _pair(pyg_nn.GCNConv, seed, FEATURES, 6)
    sparse_x = (x * (x > 0.5)).to_sparse()
    assert_agrees(ours(sparse_x, graph.edge_index), theirs(sparse_x, graph.edge_index), name="sparse x")


def test_static_graph_batches(seed, seam_calls):
    graph, weight, _ = _graph_inputs("erdos_renyi", seed)
    x = random_tensor((3, NUM_NODES, FEATURES), seed=seed + 9, dtype=torch.float64)  # (B, N, F), one graph
    theirs, ours = _pair(pyg_nn.GCNConv, seed, FEATURES, 6)
    gold = theirs(x, graph.edge_index, weight)
    baseline = copy.deepcopy(theirs).float()(x.float(), graph.edge_index, weight.float())
    candidate = ours.float()(x.float(), graph.edge_index, weight.float())
    assert candidate.shape == (3, NUM_NODES, 6)
    assert_agrees(candidate, gold, baseline, name="static graph (B, N, F)")
    assert seam_calls["aggregate"] == 1


@pytest.mark.parametrize("layer", ["GCNConv", "GATConv"])
def test_flow_target_to_source_reads_the_flipped_edges(seed, layer):
    graph, weight, x = _graph_inputs("power_law", seed)  # directed: a flow that is ignored changes the result
    pyg_class, args = (pyg_nn.GCNConv, (FEATURES, 6)) if layer == "GCNConv" else (pyg_nn.GATConv, (FEATURES, 3))
    theirs, ours = _pair(pyg_class, seed, *args)
    gold = theirs(x, graph.edge_index)
    ours.flow = "target_to_source"
    assert_agrees(ours(x, graph.edge_index.flip(0)), gold, name=f"{layer} target_to_source")


def test_gat_size_and_empty_graph(seed):
    graph, _, x = _graph_inputs("erdos_renyi", seed)
    theirs, ours = _pair(pyg_nn.GATConv, seed, FEATURES, 4, heads=2)
    gold = theirs(x, graph.edge_index)
    assert_agrees(ours(x, graph.edge_index, size=(NUM_NODES, NUM_NODES)), gold, name="GAT size=(N, N)")
    empty = ours(x[:0], torch.empty(2, 0, dtype=torch.long))
    assert empty.shape == (0, 8)


@pytest.mark.parametrize("feature", ["return_attention_weights", "residual", "edge_dim", "bipartite", "dropout",
                                     "float64"])
def test_gat_features_the_kernel_lacks_run_pyg_s_path_with_one_warning(seed, feature, seam_calls):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    options = {"residual": dict(residual=True), "edge_dim": dict(edge_dim=1), "dropout": dict(dropout=0.4),
               "bipartite": dict(in_channels=(FEATURES, FEATURES))}.get(feature, {})
    in_channels = options.pop("in_channels", FEATURES)
    backend = "triton" if feature == "float64" else "reference"  # the reference seam runs float64 itself
    theirs, ours = _pair(pyg_nn.GATConv, seed, in_channels, 4, heads=2, backend=backend, **options)
    inputs = {"bipartite": ((x, x[:20]), graph.edge_index[:, graph.edge_index[1] < 20]),
              "edge_dim": (x, graph.edge_index, weight)}.get(feature, (x, graph.edge_index))
    kwargs = dict(return_attention_weights=True) if feature == "return_attention_weights" else {}
    if feature == "dropout":
        torch.manual_seed(seed), theirs.train()
        gold = theirs(*inputs)
        torch.manual_seed(seed), ours.train()
    else:
        gold = theirs(*inputs, **kwargs)
    dtype = torch.float64 if feature == "float64" else None
    drop_in._WARNED.clear()
    with pytest.warns(UserWarning, match="runs on PyG's own \\(unfused\\) path") as caught:
        candidate = ours(*inputs, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per feature: the second call is silent
        ours(*inputs, **kwargs) if feature != "dropout" else None
    assert len([w for w in caught if "PyG's own" in str(w.message)]) == 1
    assert seam_calls["attention_aggregate"] == 0
    if feature == "return_attention_weights":
        assert torch.equal(candidate[1][0], gold[1][0])
        assert_agrees(candidate[1][1], gold[1][1], name="attention weights")
        candidate, gold = candidate[0], gold[0]
    assert dtype is None or candidate.dtype == dtype
    assert_agrees(candidate, gold, name=f"GAT with {feature} on PyG's path")
    ours.fallback = "raise"
    drop_in._WARNED.clear()
    with pytest.raises(NotImplementedError, match="does not support .*fallback='raise'"):
        ours(*inputs, **kwargs)


def test_torchscript_scripts_pyg_s_layer_with_the_same_weights(seed):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    theirs, ours = _pair(pyg_nn.GCNConv, seed, FEATURES, 6)
    drop_in._WARNED.clear()
    with pytest.warns(UserWarning, match=r"TorchScript \(torch.jit.script\) runs on PyG's own"):
        scripted = torch.jit.script(ours)
    assert_agrees(scripted(x, graph.edge_index, weight), theirs(x, graph.edge_index, weight), name="scripted GCN")
    ours.fallback = "raise"
    with pytest.raises(NotImplementedError, match=r"TorchScript"):
        torch.jit.script(ours)


def test_message_passing_hooks_run_on_pyg_s_path(seed, seam_calls):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    theirs, ours = _pair(pyg_nn.GCNConv, seed, FEATURES, 6)
    seen = []
    for conv in (theirs, ours):
        conv.register_message_forward_pre_hook(lambda module, inputs: seen.append(type(module).__module__))
        conv.register_propagate_forward_hook(lambda module, inputs, out: out * 2)  # a hook that changes the output
    assert_agrees(ours(x, graph.edge_index, weight), theirs(x, graph.edge_index, weight), name="hooked GCN")
    assert sorted(seen) == ["fusebench.integrations.pyg", "torch_geometric.nn.conv.gcn_conv"]  # once each
    assert seam_calls["aggregate"] == 0


def test_explain_masks_the_messages_as_pyg_does(seed):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    mask = random_tensor((graph.num_edges,), seed=seed + 3, dtype=torch.float64)
    outs = []
    for conv in _pair(pyg_nn.GATConv, seed, FEATURES, 3, heads=2, add_self_loops=False):
        conv.explain, conv._edge_mask = True, mask
        outs.append(conv(x, graph.edge_index))
    assert_agrees(outs[1], outs[0], name="explained GAT")


def test_pyg_s_errors_come_from_pyg(seed):
    graph, weight, x = _graph_inputs("erdos_renyi", seed)
    adj_csc = to_torch_csr_tensor(graph.edge_index.flip(0), weight, size=(NUM_NODES, NUM_NODES)).to_sparse_csc()
    for theirs, ours in (_pair(pyg_nn.GCNConv, seed, FEATURES, 4), _pair(pyg_nn.GATConv, seed, FEATURES, 4)):
        for bad in ((x, graph.edge_index.double()), (x, graph.edge_index[:1]), (x, adj_csc)):
            with pytest.raises(Exception) as expected:
                theirs(*bad)
            with pytest.raises(type(expected.value)) as got:
                ours(*bad)
            assert str(got.value) == str(expected.value)
    with pytest.raises(ValueError, match=r"'GCNConv' received a tuple of node features"):
        GCNConv(FEATURES, 4)((x, x), graph.edge_index)
    with pytest.raises(ValueError, match=r"fallback must be one of \('warn', 'raise'\), got 'never'"):
        GCNConv(FEATURES, 4, fallback="never")
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        swap_convs("GCN")
    with pytest.raises(ValueError, match=r"Linear holds no torch_geometric GCNConv or GATConv"):
        swap_convs(torch.nn.Linear(3, 3))
