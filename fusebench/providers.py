"""Providers: the implementations a case is benchmarked on, discovered where they can run.

A provider turns a :class:`Workload` (a case's tensors on a device, in a dtype) into a function of
the differentiable inputs that returns the output in the case's canonical layout, so one agreement
check and one timing loop serve every provider. A provider that cannot run a case here raises
:class:`Unavailable` with the reason; nothing is assumed to exist.

Attention (``suite="attention"``):
  ``reference``        reference.attention in eager PyTorch (materializes the scores)
  ``sdpa-math`` ...    torch.nn.functional.scaled_dot_product_attention pinned to one backend each:
                       math, flash, efficient (memory-efficient), cudnn; varlen cases run padded
                       with a mask (the padding is part of the cost)
  ``triton``, ...      every other backend the reference.attention seam knows (``triton``: kernels/attention.py,
                       declared in pyproject.toml), through the same seam the references use
  ``flash-attn``       the flash-attn package, when installed and on CUDA
Graphs (``suite="graph"``):
  ``reference``        reference.gnn.aggregate / attention_aggregate
  ``torch-sparse``     torch.sparse.mm with the CSR adjacency (normalized for gcn, 1/deg for mean),
                       built once outside the timing
  ``pyg``              PyG's own message passing: GCNConv.propagate (normalization precomputed, as
                       ``cached=True``), scatter for sum/mean/max, GATConv's edge_updater + propagate
  ``triton``, ...      the other backends reference.gnn knows (kernels/spmm.py, kernels/gat.py)
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fusebench.cases import AttentionCase, GraphCase

__all__ = ["Provider", "Unavailable", "Workload", "make_workload", "providers", "graph_suite_missing",
           "PROVIDER_NAMES", "MODEL_PROVIDER_NAMES"]

# Whole models run on the attention implementations transformers offers (plus ours), or PyG's layers (or ours).
MODEL_PROVIDER_NAMES = {"transformers": ("eager", "sdpa", "flash_attention_2", "fusebench"),
                        "pyg": ("pyg", "fusebench")}
# Every provider fusebench knows, per suite of the case catalog, in table order: the one list the asv and
# pytest-benchmark suites are parametrized over (asv fixes its params before anything runs). Which of them
# can run a case here is found per case (Unavailable: a skip that says why). suites/harness/test_providers.py
# checks that every provider :func:`providers` discovers is listed here.
PROVIDER_NAMES = {
    "attention": ("reference", "sdpa-math", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "triton", "flash-attn"),
    "graph": ("reference", "torch-sparse", "pyg", "triton"),
    "models": tuple(dict.fromkeys(name for names in MODEL_PROVIDER_NAMES.values() for name in names)),
}


class Unavailable(Exception):
    """This provider cannot run this case here; the message says why."""


@dataclass(frozen=True)
class Provider:
    name: str
    suite: str  # "attention" or "graph"
    description: str
    build: Callable  # (case, workload) -> fn(*workload.inputs.values()) -> output; raises Unavailable
    triton: bool = False  # a Triton kernel: emulated, not compiled, under TRITON_INTERPRET=1


@dataclass
class Workload:
    """A case's tensors on one device in one dtype.

    ``inputs``: the differentiable inputs in call order (q, k, v; or x [, alpha_src, alpha_dst]).
    ``context``: what providers need besides them (cu_seqlens, the graph, its edge_index).
    ``dout``: the gradient fed to the output for the backward modes.
    """

    case: AttentionCase | GraphCase
    device: str
    dtype: torch.dtype
    inputs: dict[str, torch.Tensor]
    dout: torch.Tensor
    context: dict = field(default_factory=dict)

    def cast(self, dtype: torch.dtype) -> Workload:
        return Workload(self.case, self.device, dtype, {k: v.to(dtype) for k, v in self.inputs.items()},
                        self.dout.to(dtype), self.context)


def make_workload(case, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int | None = None) -> Workload:
    """The case's deterministic inputs on ``device`` in ``dtype`` (graphs: generated once per case)."""
    if isinstance(case, AttentionCase):
        tensors = case.inputs(dtype=dtype, device=device, seed=seed)
        context = {"cu_seqlens": tensors.pop("cu_seqlens")} if case.seqlens else {}
        dout = tensors.pop("dout")
        return Workload(case, device, dtype, tensors, dout, context)
    graph = _generate(case, device)
    if case.op == "gcn":  # GCN aggregates over A + I: the loops are part of the workload, as in GCNConv
        graph = importlib.import_module("reference.graph").add_remaining_self_loops(graph)
    tensors = case.features_input(dtype=dtype, device=device, seed=seed)
    dout = tensors.pop("dout")
    return Workload(case, device, dtype, tensors, dout, {"graph": graph, "edge_index": _edge_index(graph)})


# --------------------------------------------------------------------------------------------------
# Attention providers
# --------------------------------------------------------------------------------------------------


def _reference_attention(case: AttentionCase, wl: Workload):
    from reference.attention import scaled_dot_product_attention, varlen_attention

    if case.seqlens:
        cu = wl.context["cu_seqlens"]
        return lambda q, k, v: varlen_attention(q, k, v, cu, cu, is_causal=case.causal)
    return lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=case.causal)


def _padding_index(cu_seqlens: torch.Tensor):
    """(sequence, position) of each packed token, and the longest length: to scatter into a padded batch."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths)
    pos = torch.arange(int(cu_seqlens[-1]), device=cu_seqlens.device) - cu_seqlens[:-1].long()[seq]
    return seq, pos, int(lengths.max())


def _sdpa(backend_name: str):
    def build(case: AttentionCase, wl: Workload):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, backend_name)
        gqa = case.heads != case.kv_heads

        def call(q, k, v, mask=None, causal=case.causal):
            try:
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa)
            except RuntimeError as error:
                if "No viable backend" in str(error) or "No available kernel" in str(error):
                    raise Unavailable(f"torch SDPA {backend_name} cannot run this case on {wl.device} "
                                      f"({wl.dtype}, D={case.head_dim}{', GQA' if gqa else ''})") from None
                raise

        if not case.seqlens:
            if case.causal and case.seq_q != case.seq_k:
                raise Unavailable("torch's is_causal is top-left aligned; ours is bottom-right (Nq != Nk)")
            return call
        seq, pos, longest = _padding_index(wl.context["cu_seqlens"])
        keep = torch.zeros(len(case.seqlens), longest, dtype=torch.bool, device=wl.device)
        keep[seq, pos] = True  # (S, N): True on real tokens
        mask = keep[:, None, None, :]  # (S, 1, 1, N)
        if case.causal:
            mask = mask & torch.ones(longest, longest, dtype=torch.bool, device=wl.device).tril()

        def padded(t):  # (total, H, D) -> (S, H, N, D), zeros in the padding
            out = t.new_zeros(len(case.seqlens), longest, *t.shape[1:])
            out[seq, pos] = t
            return out.transpose(1, 2)

        return lambda q, k, v: call(padded(q), padded(k), padded(v), mask, False).transpose(1, 2)[seq, pos]

    return build


def _loaded(registry, name: str):
    """The backend's function, or Unavailable saying why it does not load here (listing it loaded nothing)."""
    from reference.backends import UnknownBackend

    try:
        return registry.get(name)
    except UnknownBackend as error:
        raise Unavailable(str(error)) from error


def _seam_backend(name: str):
    def build(case: AttentionCase, wl: Workload):
        from reference.attention import ATTENTION_BACKENDS, scaled_dot_product_attention

        _loaded(ATTENTION_BACKENDS, name)
        if case.seqlens:  # the seam has no varlen entry: only the Triton kernel module may offer one
            varlen = getattr(importlib.import_module("kernels.attention"), "varlen_attention", None) \
                if name == "triton" else None
            if varlen is None:
                raise Unavailable(f"backend {name!r} has no varlen entry point")
            cu = wl.context["cu_seqlens"]
            return lambda q, k, v: varlen(q, k, v, cu, cu, is_causal=case.causal)
        return lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=case.causal, backend=name)

    return build


def _flash_attn(case: AttentionCase, wl: Workload):
    if not str(wl.device).startswith("cuda"):
        raise Unavailable("flash-attn runs on CUDA only")
    if importlib.util.find_spec("flash_attn") is None:
        raise Unavailable("the flash-attn package is not installed")
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    if case.seqlens:
        cu, longest = wl.context["cu_seqlens"], max(case.seqlens)
        return lambda q, k, v: flash_attn_varlen_func(q, k, v, cu, cu, longest, longest, causal=case.causal)
    # flash-attn's layout is (B, N, H, D); its causal mask is bottom-right aligned like ours.
    return lambda q, k, v: flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           causal=case.causal).transpose(1, 2)


def _attention_providers() -> list[Provider]:
    from reference.attention import attention_backends

    found = [Provider("reference", "attention", "reference.attention, eager PyTorch", _reference_attention)]
    for label, backend in (("math", "MATH"), ("flash", "FLASH_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"),
                           ("cudnn", "CUDNN_ATTENTION")):
        found.append(Provider(f"sdpa-{label}", "attention", f"torch SDPA, {label} backend only", _sdpa(backend)))
    for name in attention_backends():
        if name not in ("reference", "sdpa"):
            found.append(Provider(name, "attention", f"reference.attention backend {name!r}", _seam_backend(name),
                                  triton=name == "triton"))
    found.append(Provider("flash-attn", "attention", "the flash-attn package", _flash_attn))
    return found


# --------------------------------------------------------------------------------------------------
# Graph providers
# --------------------------------------------------------------------------------------------------


def graph_suite_missing() -> str | None:
    """Why the graph suite cannot run here (its reference modules do not import), or None."""
    for module in ("reference.gnn", "reference.graph_generators"):
        try:
            importlib.import_module(module)
        except ImportError as error:
            return f"{module} is not importable ({error})"
    return None


def _generate(case: GraphCase, device: str):
    """The case's graph from reference.graph_generators, passing the parameters the generator accepts."""
    generators = importlib.import_module("reference.graph_generators")
    make = getattr(generators, case.generator, None)
    if make is None:
        raise Unavailable(f"reference.graph_generators has no {case.generator}")
    offered = {"num_nodes": case.num_nodes, "num_edges": case.num_edges, "avg_degree": case.avg_degree,
               "seed": case.seed}
    accepted = inspect.signature(make).parameters
    graph = make(**{k: v for k, v in offered.items() if k in accepted})
    return graph.to(device) if hasattr(graph, "to") else graph


def _edge_index(graph) -> torch.Tensor:
    """(2, E) int64, messages flowing from row 0 (source) to row 1 (destination), PyG's convention."""
    edge_index = getattr(graph, "edge_index", graph)
    if not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise TypeError(f"cannot read an edge_index (2, E) from a {type(graph).__name__}")
    return edge_index.long()


def _reference_graph(backend: str):
    def build(case: GraphCase, wl: Workload):
        gnn = importlib.import_module("reference.gnn")
        _loaded(gnn.ATTENTION_AGGREGATE_BACKENDS if case.op == "gat" else gnn.AGGREGATE_BACKENDS, backend)
        graph = wl.context["graph"]
        if case.op == "gat":
            return lambda x, a_src, a_dst: gnn.attention_aggregate(graph, x, a_src, a_dst, backend=backend)
        reduce, normalize = ("sum", "gcn") if case.op == "gcn" else (case.op, None)
        return lambda x: gnn.aggregate(graph, x, reduce=reduce, normalize=normalize, backend=backend)

    return build


def _gcn_norm(case: GraphCase, wl: Workload):
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    # The workload's graph already holds its self-loops (make_workload); normalize the edges as given.
    weight = getattr(wl.context["graph"], "edge_weight", None)
    weight = None if weight is None else weight.to(wl.dtype)
    return gcn_norm(wl.context["edge_index"], weight, case.num_nodes, add_self_loops=False, dtype=wl.dtype)


def _torch_sparse(case: GraphCase, wl: Workload):
    if case.op in ("max", "gat"):
        raise Unavailable(f"torch.sparse.mm computes weighted sums; {case.op} is not one")
    edge_index = wl.context["edge_index"]
    if case.op == "gcn":
        edge_index, weight = _gcn_norm(case, wl)
    else:
        weight = torch.ones(edge_index.shape[1], dtype=wl.dtype, device=wl.device)
        if case.op == "mean":
            degree = torch.bincount(edge_index[1], minlength=case.num_nodes).to(wl.dtype)
            weight = weight / degree[edge_index[1]]
    with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and not the user's to act on
        warnings.simplefilter("ignore", UserWarning)
        adjacency = torch.sparse_coo_tensor(edge_index.flip(0), weight, (case.num_nodes, case.num_nodes))
        adjacency = adjacency.coalesce().to_sparse_csr()  # rows = destinations, built outside the timing
    return lambda x: torch.sparse.mm(adjacency, x)


def _pyg(case: GraphCase, wl: Workload):
    from torch_geometric.nn import GATConv, GCNConv
    from torch_geometric.utils import scatter

    edge_index = wl.context["edge_index"]
    if case.op == "gcn":
        conv = GCNConv(case.features, case.features, normalize=False, bias=False).to(wl.device)
        edge_index, weight = _gcn_norm(case, wl)
        return lambda x: conv.propagate(edge_index, x=x, edge_weight=weight)
    if case.op == "gat":
        channels = case.features // case.heads
        conv = GATConv(channels, channels, heads=case.heads, add_self_loops=False).to(wl.device)

        def gat(x, a_src, a_dst):
            alpha = conv.edge_updater(edge_index, alpha=(a_src, a_dst), edge_attr=None)
            return conv.propagate(edge_index, x=(x, x), alpha=alpha)

        return gat
    src, dst = edge_index
    return lambda x: scatter(x[src], dst, dim=0, dim_size=case.num_nodes, reduce=case.op)


def _graph_providers() -> list[Provider]:
    if graph_suite_missing():
        return []
    gnn = importlib.import_module("reference.gnn")
    found = [Provider("reference", "graph", "reference.gnn, eager PyTorch", _reference_graph("reference")),
             Provider("torch-sparse", "graph", "torch.sparse.mm on a CSR adjacency", _torch_sparse),
             Provider("pyg", "graph", "PyG message passing (GCNConv / GATConv / scatter)", _pyg)]
    registered = getattr(gnn, "aggregation_backends", lambda: ["reference"])()
    for name in registered:
        if name != "reference":
            found.append(Provider(name, "graph", f"reference.gnn backend {name!r}", _reference_graph(name),
                                  triton=name == "triton"))
    return found


def providers(suite: str | None = None) -> list[Provider]:
    """Every provider this machine knows of, for one suite or both (availability is per case)."""
    if suite not in (None, "attention", "graph"):
        raise ValueError(f"suite must be 'attention', 'graph' or None, got {suite!r}")
    found = []
    if suite in (None, "attention"):
        found += _attention_providers()
    if suite in (None, "graph"):
        found += _graph_providers()
    return found
