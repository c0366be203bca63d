"""Graph neural network layers and the neighbour-aggregation seam every graph kernel replaces.

Conventions (see reference/graph.py): a :class:`~reference.graph.Graph` holds ``edge_index (2, E)`` with
row 0 = source ``j`` and row 1 = destination ``i``; messages flow ``j -> i`` and node ``i`` reduces over
its incoming edges. Duplicate edges are separate messages; a self-loop is an ordinary edge.

The seam: two functions hold the hot core of every layer in this file, and a ``backend=`` argument
picks their implementation (the same registry pattern as ``reference.attention``):

* :func:`aggregate`: ``out[i] = reduce over edges e = (j -> i) of w_e * x[j]`` with ``reduce`` in
  ``sum``/``mean``/``max``, optionally GCN-normalized. Matrix form for ``sum``: ``out = A @ X`` with
  ``A[i, j] = w_e``: a sparse-dense matrix product (SpMM).
* :func:`attention_aggregate`: GAT's edge softmax and weighted sum (Velickovic et al. 2018, eq. 3-4).

The default backend, ``"reference"``, is the textbook code in this file: ``index_add`` and
``scatter_reduce`` over the edge list, O(E + N) memory, never a dense ``N x N`` matrix, differentiable
by autograd. Other backends register with :func:`register_aggregation_backend` /
:func:`register_attention_aggregation_backend`; ``"triton"`` is loaded on first use from the modules
named in ``_PLUGINS`` (``kernels.spmm``, ``kernels.gat``) by name, so this package never imports
``kernels/``.

Empty neighbourhoods: a node with no incoming edge gets **0** from every reduction (sum, mean, max)
and from :func:`attention_aggregate`; this matches PyG's ``scatter`` (whose max fills empty rows
with 0).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from reference.graph import Graph, check_node_features, gcn_edge_scale

__all__ = [
    "aggregate",
    "attention_aggregate",
    "segment_reduce",
    "edge_softmax",
    "register_aggregation_backend",
    "register_attention_aggregation_backend",
    "aggregation_backends",
    "REDUCTIONS",
]

REDUCTIONS = ("sum", "mean", "max")

# --------------------------------------------------------------------------------------------------
# The backend seam
# --------------------------------------------------------------------------------------------------

AggregateFn = Callable[..., torch.Tensor]
_AGGREGATE: dict[str, AggregateFn] = {}
_ATTENTION: dict[str, AggregateFn] = {}
# Backends that live outside reference/: each module is imported by name on first use and is expected
# to call register_aggregation_backend and/or register_attention_aggregation_backend when imported.
_PLUGINS: dict[str, tuple[str, ...]] = {"triton": ("kernels.spmm", "kernels.gat")}


def register_aggregation_backend(name: str, fn: AggregateFn) -> None:
    """Make ``fn`` available as ``aggregate(..., backend=name)``.

    ``fn(graph, x, *, reduce, edge_weight, normalize)`` receives arguments already validated by
    :func:`aggregate`: ``x`` is ``(N, F)``; ``edge_weight`` is ``(E,)`` in ``x``'s dtype (the argument,
    else the graph's weights) or None for unit weights; ``normalize`` is None or ``"gcn"``. It returns
    ``(N, F)`` and raises ``NotImplementedError`` naming any option it does not support. ``graph.csr()``
    and ``graph.csc()`` give the compressed layouts (cached on the graph).
    """
    _AGGREGATE[name] = fn


def register_attention_aggregation_backend(name: str, fn: AggregateFn) -> None:
    """Make ``fn`` available as ``attention_aggregate(..., backend=name)``.

    ``fn(graph, x, alpha_src, alpha_dst, *, negative_slope)`` receives validated arguments (see
    :func:`attention_aggregate`) and returns ``(N, H, C)``.
    """
    _ATTENTION[name] = fn


def _load_plugin(name: str, *, quiet: bool) -> None:
    """Import the modules of plugin ``name``. A module that does not exist yet is skipped; any other
    import error propagates unless ``quiet`` (used when only listing what loads)."""
    for module in _PLUGINS.get(name, ()):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if quiet or error.name == module:
                continue
            raise
        except ImportError:
            if not quiet:
                raise


def _lookup(table: dict[str, AggregateFn], name: str, seam: str) -> AggregateFn:
    if name not in table and name in _PLUGINS:
        _load_plugin(name, quiet=False)
    try:
        return table[name]
    except KeyError:
        available = sorted(table)
        raise ValueError(f"backend must be one of {available} for {seam}, got {name!r}") from None


def aggregation_backends(seam: str | None = None) -> list[str]:
    """The backends that load here: for ``seam="aggregate"``, ``"attention_aggregate"``, or either (None).

    Plugins whose modules fail to import are left out.
    """
    for name in _PLUGINS:
        _load_plugin(name, quiet=True)
    if seam == "aggregate":
        return sorted(_AGGREGATE)
    if seam == "attention_aggregate":
        return sorted(_ATTENTION)
    if seam is None:
        return sorted(set(_AGGREGATE) | set(_ATTENTION))
    raise ValueError(f"seam must be 'aggregate', 'attention_aggregate' or None, got {seam!r}")


# --------------------------------------------------------------------------------------------------
# Segment reduction: the generic "reduce per destination" that every backend must reproduce
# --------------------------------------------------------------------------------------------------


def segment_reduce(messages: torch.Tensor, index: torch.Tensor, num_nodes: int, reduce: str = "sum") -> torch.Tensor:
    """Reduce per-edge ``messages (E, *F)`` into ``(N, *F)`` by destination ``index (E,)``.

    ``sum`` adds, ``mean`` divides the sum by the number of edges arriving (weights do not enter the
    count), ``max`` takes the element-wise maximum. Rows that receive no message are 0 for all three.
    O(E * F) memory; differentiable (``max`` sends the gradient to the maximal message(s); ties split
    it evenly, as ``torch.scatter_reduce`` does).
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    index = index.long()
    out = messages.new_zeros((num_nodes,) + messages.shape[1:])  # (N, *F)
    if reduce == "max":
        expanded = index.view(-1, *([1] * (messages.dim() - 1))).expand_as(messages)  # (E, *F)
        # include_self=False: rows with messages ignore the initial 0; rows without keep it.
        return out.scatter_reduce(0, expanded, messages, reduce="amax", include_self=False)
    out = out.index_add(0, index, messages)  # (N, *F)
    if reduce == "mean":
        count = torch.bincount(index, minlength=num_nodes).clamp(min=1)  # (N,); empty rows divide 0 by 1
        out = out / count.view(-1, *([1] * (messages.dim() - 1))).to(out.dtype)
    return out


# --------------------------------------------------------------------------------------------------
# aggregate: weighted neighbour reduction (SpMM for "sum")
# --------------------------------------------------------------------------------------------------


def aggregate(graph: Graph, x: torch.Tensor, *, reduce: str = "sum", edge_weight: torch.Tensor | None = None,
              normalize: str | None = None, backend: str = "reference") -> torch.Tensor:
    """Reduce neighbour features over incoming edges.

    Node-wise form, for every destination ``i``:

        out[i] = REDUCE over edges e = (j -> i) of  c_e * x[j]

    with ``c_e = w_e`` (``normalize=None``) or ``c_e = deg^-1/2[i] * w_e * deg^-1/2[j]``
    (``normalize="gcn"``, ``deg`` the weighted in-degree of the graph as given: add self-loops before
    calling, as :class:`GCNConv` does). Matrix form for ``sum``: ``out = A @ X`` with ``A[i, j] = sum of
    c_e over edges j -> i``. ``mean`` divides the sum by the in-edge count; ``max`` is element-wise.
    A node with no incoming edge gets 0 for every reduction.

    Args:
        graph: the edges (and default weights ``graph.edge_weight``).
        x: node features ``(N, F)``.
        reduce: ``"sum"``, ``"mean"`` or ``"max"``.
        edge_weight: ``(E,)`` weights overriding ``graph.edge_weight``; unit weights when both are None.
            Cast to ``x``'s dtype.
        normalize: None or ``"gcn"``.
        backend: ``"reference"`` (this file), ``"triton"`` (kernels/spmm.py), ...

    Shapes:
        x ``(N, F)`` -> ``(N, F)``.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a reference.graph.Graph, got {type(graph).__name__}")
    check_node_features("x", x, graph.num_nodes, dim=2)
    if x.device != graph.device:
        raise ValueError(f"x must be on the graph's device {graph.device}, got {x.device}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if normalize not in (None, "gcn"):
        raise ValueError(f"normalize must be None or 'gcn', got {normalize!r}")
    weight = graph.edge_weight if edge_weight is None else edge_weight
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            raise TypeError("edge_weight must be a floating-point tensor or None")
        if tuple(weight.shape) != (graph.num_edges,):
            raise ValueError(f"edge_weight must have shape (E,) = ({graph.num_edges},), got {tuple(weight.shape)}")
        weight = weight.to(x.dtype)
    return _lookup(_AGGREGATE, backend, "aggregate")(graph, x, reduce=reduce, edge_weight=weight,
                                                     normalize=normalize)


def _reference_aggregate(graph: Graph, x: torch.Tensor, *, reduce: str, edge_weight: torch.Tensor | None,
                         normalize: str | None) -> torch.Tensor:
    """Gather, scale, scatter: O(E * F) memory, one pass over the edge list."""
    source = graph.source.long()
    coefficient = edge_weight  # (E,) or None
    if normalize == "gcn":
        unit = edge_weight if edge_weight is not None else x.new_ones(graph.num_edges)
        coefficient = unit * gcn_edge_scale(graph, unit)  # (E,)
    messages = x[source]  # (E, F)
    if coefficient is not None:
        messages = messages * coefficient[:, None]
    return segment_reduce(messages, graph.destination, graph.num_nodes, reduce)  # (N, F)


register_aggregation_backend("reference", _reference_aggregate)


# --------------------------------------------------------------------------------------------------
# attention_aggregate: GAT's softmax over incoming edges
# --------------------------------------------------------------------------------------------------


def attention_aggregate(graph: Graph, x: torch.Tensor, alpha_src: torch.Tensor, alpha_dst: torch.Tensor, *,
                        negative_slope: float = 0.2, backend: str = "reference") -> torch.Tensor:
    """Attention-weighted neighbour sum, per head (Velickovic et al. 2018, eq. 3-4).

    Node-wise form, for destination ``i``, head ``h`` and incoming edge ``e = (j -> i)``:

        s_e      = LeakyReLU(alpha_src[j, h] + alpha_dst[i, h])
        a_e      = exp(s_e) / sum over edges e' = (j' -> i) of exp(s_e')
        out[i,h] = sum over e = (j -> i) of a_e * x[j, h]

    Matrix form: ``out[:, h] = softmax_rowwise(S_h) @ X_h``, with ``S_h[i, j] = s_e`` on the edges and
    -inf elsewhere. Duplicate edges count once each in the softmax. A destination with no incoming edge
    gets 0. Edge weights are not used.

    Args:
        graph: the edges.
        x: projected features ``(N, H, C)``.
        alpha_src: per-node source scores ``(N, H)`` (``<x[j, h], a_src[h]>`` in GAT).
        alpha_dst: per-node destination scores ``(N, H)``.
        negative_slope: the LeakyReLU slope (0.2 in the paper).
        backend: ``"reference"`` (this file), ``"triton"`` (kernels/gat.py), ...

    Shapes:
        x ``(N, H, C)``, alpha_src/alpha_dst ``(N, H)`` -> ``(N, H, C)``.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a reference.graph.Graph, got {type(graph).__name__}")
    check_node_features("x", x, graph.num_nodes, dim=3)
    for name, alpha in (("alpha_src", alpha_src), ("alpha_dst", alpha_dst)):
        check_node_features(name, alpha, graph.num_nodes, dim=2)
        if alpha.shape[1] != x.shape[1]:
            raise ValueError(f"{name} must have shape (N, H) = {tuple(x.shape[:2])}, got {tuple(alpha.shape)}")
        if alpha.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype {x.dtype}, got {alpha.dtype}")
    if x.device != graph.device or alpha_src.device != graph.device or alpha_dst.device != graph.device:
        raise ValueError(f"x, alpha_src and alpha_dst must be on the graph's device {graph.device}")
    if not isinstance(negative_slope, (int, float)) or negative_slope < 0:
        raise ValueError(f"negative_slope must be a non-negative number, got {negative_slope!r}")
    return _lookup(_ATTENTION, backend, "attention_aggregate")(graph, x, alpha_src, alpha_dst,
                                                               negative_slope=float(negative_slope))


def edge_softmax(scores: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Softmax of per-edge ``scores (E, H)`` over the edges that share a destination ``index (E,)``.

    The per-destination maximum is subtracted first (detached: softmax does not depend on it), so
    large scores do not overflow.
    """
    index = index.long()
    expanded = index[:, None].expand_as(scores)  # (E, H)
    row_max = scores.new_zeros((num_nodes, scores.shape[1])).scatter_reduce(
        0, expanded, scores.detach(), reduce="amax", include_self=False)  # (N, H)
    weights = torch.exp(scores - row_max[index])  # (E, H), each <= 1
    row_sum = weights.new_zeros((num_nodes, scores.shape[1])).index_add(0, index, weights)  # (N, H), >= 1 if used
    return weights / row_sum[index]


def _reference_attention_aggregate(graph: Graph, x: torch.Tensor, alpha_src: torch.Tensor, alpha_dst: torch.Tensor,
                                   *, negative_slope: float) -> torch.Tensor:
    source, destination = graph.source.long(), graph.destination.long()
    scores = torch.nn.functional.leaky_relu(alpha_src[source] + alpha_dst[destination], negative_slope)  # (E, H)
    weights = edge_softmax(scores, destination, graph.num_nodes)  # (E, H)
    messages = weights[..., None] * x[source]  # (E, H, C)
    return segment_reduce(messages, destination, graph.num_nodes, "sum")  # (N, H, C)


register_attention_aggregation_backend("reference", _reference_attention_aggregate)
