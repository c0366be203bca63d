"""Graph neural network layers and the neighbour-aggregation seam every graph kernel replaces.

Contents, in reading order: the backend seam (:func:`aggregate`, :func:`attention_aggregate`) and their
reference implementations; :class:`MessagePassing` (seed section 16); :class:`GCNConv` (sections 10, 18);
:class:`GATConv` (section 17).

Conventions (see reference/graph.py): a :class:`~reference.graph.Graph` holds ``edge_index (2, E)`` with
row 0 = source ``j`` and row 1 = destination ``i``; messages flow ``j -> i`` and node ``i`` reduces over
its incoming edges. Duplicate edges are separate messages; a self-loop is an ordinary edge.

The seam: two functions hold the hot core of every layer in this file, and a ``backend=`` argument
picks their implementation (one registry per seam, reference/backends.py, as for ``reference.attention``):

* :func:`aggregate`: ``out[i] = reduce over edges e = (j -> i) of w_e * x[j]`` with ``reduce`` in
  ``sum``/``mean``/``max``, optionally GCN-normalized. Matrix form for ``sum``: ``out = A @ X`` with
  ``A[i, j]`` = the total weight of the edges ``j -> i``: a sparse-dense matrix product (SpMM).
* :func:`attention_aggregate`: GAT's edge softmax and weighted sum (Velickovic et al. 2018, eq. 3-4).

The default backend, ``"reference"``, is the textbook code in this file: ``index_add`` and
``scatter_reduce`` over the edge list, O(E + N) memory, never a dense ``N x N`` matrix, differentiable
by autograd. Other backends are registered with :func:`register_aggregation_backend` /
:func:`register_attention_aggregation_backend`, or are declared as entry points and loaded on first use
(``"triton"``: kernels/spmm.py, kernels/gat.py), so this package never imports ``kernels/``.

Empty neighbourhoods: a node with no incoming edge gets **0** from every reduction (sum, mean, max)
and from :func:`attention_aggregate`; this matches PyG's ``scatter`` (whose max fills empty rows
with 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from reference.backends import Backends
from reference.graph import (
    Graph,
    add_remaining_self_loops,
    add_self_loops,
    check_node_features,
    gcn_edge_scale,
    remove_self_loops,
)

__all__ = [
    "aggregate",
    "attention_aggregate",
    "segment_reduce",
    "edge_softmax",
    "register_aggregation_backend",
    "register_attention_aggregation_backend",
    "aggregation_backends",
    "AGGREGATE_BACKENDS",
    "ATTENTION_AGGREGATE_BACKENDS",
    "REDUCTIONS",
    "validate_reduce",
    "MessagePassing",
    "GCNConv",
    "GATConv",
]

REDUCTIONS = ("sum", "mean", "max")


def validate_reduce(reduce) -> None:
    """Raise naming ``reduce`` unless it is one of :data:`REDUCTIONS`."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


# --------------------------------------------------------------------------------------------------
# The backend seam
# --------------------------------------------------------------------------------------------------

AggregateFn = Callable[..., torch.Tensor]
# The two seams' backends; "triton" is declared for both in pyproject.toml (see reference/backends.py).
AGGREGATE_BACKENDS = Backends("aggregate")
ATTENTION_AGGREGATE_BACKENDS = Backends("attention_aggregate")
_SEAMS = {"aggregate": AGGREGATE_BACKENDS, "attention_aggregate": ATTENTION_AGGREGATE_BACKENDS}


def register_aggregation_backend(name: str, fn: AggregateFn) -> None:
    """Make ``fn`` available as ``aggregate(..., backend=name)``.

    ``fn(graph, x, *, reduce, edge_weight, normalize)`` receives arguments already validated by
    :func:`aggregate`: ``x`` is ``(N, F)``; ``edge_weight`` is ``(E,)`` in ``x``'s dtype (the argument,
    else the graph's weights) or None for unit weights; ``normalize`` is None or ``"gcn"``. It returns
    ``(N, F)`` and raises ``NotImplementedError`` naming any option it does not support. ``graph.csr()``
    and ``graph.csc()`` give the compressed layouts (cached on the graph).
    """
    AGGREGATE_BACKENDS.register(name, fn)


def register_attention_aggregation_backend(name: str, fn: AggregateFn) -> None:
    """Make ``fn`` available as ``attention_aggregate(..., backend=name)``.

    ``fn(graph, x, alpha_src, alpha_dst, *, negative_slope)`` receives validated arguments (see
    :func:`attention_aggregate`) and returns ``(N, H, C)``.
    """
    ATTENTION_AGGREGATE_BACKENDS.register(name, fn)


def aggregation_backends(seam: str | None = None) -> list[str]:
    """The backends known for ``seam="aggregate"``, ``"attention_aggregate"``, or either (None): registered, or
    declared by an entry point (listing them imports none)."""
    if seam is None:
        return sorted(set(AGGREGATE_BACKENDS.names()) | set(ATTENTION_AGGREGATE_BACKENDS.names()))
    if seam not in _SEAMS:
        raise ValueError(f"seam must be 'aggregate', 'attention_aggregate' or None, got {seam!r}")
    return _SEAMS[seam].names()


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
    validate_reduce(reduce)
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
    validate_reduce(reduce)
    if normalize not in (None, "gcn"):
        raise ValueError(f"normalize must be None or 'gcn', got {normalize!r}")
    weight = graph.edge_weight if edge_weight is None else edge_weight
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            raise TypeError("edge_weight must be a floating-point tensor or None")
        if tuple(weight.shape) != (graph.num_edges,):
            raise ValueError(f"edge_weight must have shape (E,) = ({graph.num_edges},), got {tuple(weight.shape)}")
        weight = weight.to(x.dtype)
    return AGGREGATE_BACKENDS.get(backend)(graph, x, reduce=reduce, edge_weight=weight, normalize=normalize)


def _reference_aggregate(graph: Graph, x: torch.Tensor, *, reduce: str, edge_weight: torch.Tensor | None,
                         normalize: str | None) -> torch.Tensor:
    """Gather, scale, scatter: O(E * F) memory, one pass over the edge list."""
    source = graph.source.long()
    coefficient = edge_weight  # (E,) or None
    if normalize == "gcn":
        unit = edge_weight if edge_weight is not None else x.new_ones(graph.num_edges)
        coefficient = unit * gcn_edge_scale(graph, unit)  # (E,)
    messages = x.index_select(0, source)  # (E, F)
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
    return ATTENTION_AGGREGATE_BACKENDS.get(backend)(graph, x, alpha_src, alpha_dst,
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


# --------------------------------------------------------------------------------------------------
# Message passing (seed section 16)
# --------------------------------------------------------------------------------------------------


class MessagePassing(nn.Module):
    """Neural message passing (Gilmer et al. 2017, "Neural Message Passing for Quantum Chemistry").

    Node-wise form, for every destination ``i``:

        m_e  = message(x_i, x_j, w_e)                   for each edge e = (j -> i)
        a_i  = REDUCE over edges e = (j -> i) of m_e    (sum, mean or max; 0 if i has no incoming edge)
        x_i' = update(a_i, x_i)

    Matrix form for the default message ``m_e = w_e * x_j`` with ``sum``: ``X' = update(A X, X)``.

    The two halves are separate methods so that one kernel replaces exactly one of them:
    :meth:`message` computes per-edge messages and :meth:`aggregate` reduces them per destination.
    When a subclass keeps the default message, :meth:`propagate` does not materialize the ``(E, F)``
    messages at all: "scale and reduce" is a sparse-matrix product, computed by the seam
    :func:`reference.gnn.aggregate` with this layer's ``backend``. A subclass that overrides
    :meth:`message` gets its messages reduced by :func:`segment_reduce` (the reference).

    With no overrides this module is plain neighbour aggregation: ``MessagePassing("mean")(graph, x)``.

    Shapes:
        x ``(N, F)`` (any ``(N, *F)`` for custom messages) -> ``(N, F)``; edge_weight ``(E,)``.
    """

    def __init__(self, reduce: str = "sum", *, backend: str = "reference"):
        super().__init__()
        validate_reduce(reduce)
        self.reduce = reduce
        self.backend = backend

    def forward(self, graph: Graph, x: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.propagate(graph, x, edge_weight=edge_weight)

    def propagate(self, graph: Graph, x: torch.Tensor, *, edge_weight: torch.Tensor | None = None,
                  normalize: str | None = None, **edge_inputs: torch.Tensor) -> torch.Tensor:
        """Messages, reduction, update. ``edge_inputs`` are extra ``(E, ...)`` tensors handed to
        :meth:`message`; ``normalize="gcn"`` (default message only) is passed to the seam."""
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be a reference.graph.Graph, got {type(graph).__name__}")
        check_node_features("x", x, graph.num_nodes)
        weight = graph.edge_weight if edge_weight is None else edge_weight
        default_message = type(self).message is MessagePassing.message
        if default_message and not edge_inputs and x.dim() == 2:
            aggregated = aggregate(graph, x, reduce=self.reduce, edge_weight=weight, normalize=normalize,
                                   backend=self.backend)  # (N, F), the seam: never builds (E, F)
        else:
            if normalize is not None:
                raise ValueError("normalize is only supported with the default message w_e * x_j")
            for name, value in edge_inputs.items():
                if not isinstance(value, torch.Tensor) or value.shape[:1] != (graph.num_edges,):
                    raise ValueError(f"{name} must be a tensor with E={graph.num_edges} rows")
            source, destination = graph.source.long(), graph.destination.long()
            messages = self.message(x_i=x[destination], x_j=x[source], edge_weight=weight, **edge_inputs)  # (E, *F)
            aggregated = self.aggregate(messages, graph)  # (N, *F)
        return self.update(aggregated, x)

    def message(self, x_i: torch.Tensor, x_j: torch.Tensor, edge_weight: torch.Tensor | None) -> torch.Tensor:
        """Per-edge messages ``(E, *F)`` from the destination features ``x_i``, source features ``x_j``
        (both ``(E, *F)``) and the weights ``(E,)``. Default: ``w_e * x_j`` (``x_j`` when unweighted)."""
        if edge_weight is None:
            return x_j
        return x_j * edge_weight.to(x_j.dtype).view(-1, *([1] * (x_j.dim() - 1)))

    def aggregate(self, messages: torch.Tensor, graph: Graph) -> torch.Tensor:
        """Reduce ``messages (E, *F)`` per destination into ``(N, *F)`` with this layer's ``reduce``."""
        return segment_reduce(messages, graph.destination, graph.num_nodes, self.reduce)

    def update(self, aggregated: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The new node state from the reduction and the old features. Default: the reduction itself."""
        return aggregated


# --------------------------------------------------------------------------------------------------
# Graph convolution (seed sections 10 and 18)
# --------------------------------------------------------------------------------------------------


def _glorot_(tensor: torch.Tensor, fan_in: int, fan_out: int) -> None:
    bound = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot and Bengio 2010, uniform variant
    with torch.no_grad():
        tensor.uniform_(-bound, bound)


class GCNConv(MessagePassing):
    """Graph convolution (Kipf and Welling 2017, "Semi-Supervised Classification with Graph
    Convolutional Networks", eq. 2).

    Matrix form:

        X' = D~^-1/2 A~ D~^-1/2 X W + b,    A~ = A + I,  D~[i, i] = sum_j A~[i, j]

    Node-wise form, for every node ``i``:

        x_i' = W^T  sum over edges e = (j -> i) of A~ (self-loop included) of  w_e / sqrt(d~_i d~_j) * x_j  + b

    where ``d~_i`` is the weighted in-degree of ``i`` in ``A~`` (:func:`reference.graph.gcn_norm`,
    PyG's convention: existing self-loops keep their weight instead of gaining another).
    The features are projected first (``X W``, cheaper when ``out_channels < in_channels``) and then
    aggregated through the seam :func:`aggregate` with ``normalize="gcn"`` and this layer's ``backend``.

    Args:
        in_channels / out_channels: feature widths.
        improved: self-loops of weight 2 (``A + 2I``, PyG's "improved" GCN).
        add_self_loops: use ``A~ = A + I`` (the paper) or ``A`` as given; default: the value of ``normalize``
            (PyG's default).
        normalize: apply the symmetric normalization (False: the plain weighted sum ``A~ X W``).
        bias: add the learnable ``b``.
        backend: the aggregation backend (``"reference"``, ``"triton"``, ...).

    Shapes:
        x ``(N, in_channels)``, edge_weight ``(E,)`` -> ``(N, out_channels)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, improved: bool = False,
                 add_self_loops: bool | None = None, normalize: bool = True, bias: bool = True,
                 backend: str = "reference"):
        super().__init__("sum", backend=backend)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.fill_value = 2.0 if improved else 1.0
        self.add_self_loops = normalize if add_self_loops is None else add_self_loops
        self.normalize = normalize
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        _glorot_(self.lin.weight, in_channels, out_channels)

    def forward(self, graph: Graph, x: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        check_node_features("x", x, graph.num_nodes, dim=2)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have in_channels={self.in_channels} columns, got shape {tuple(x.shape)}")
        if edge_weight is not None:
            graph = graph.with_edge_weight(edge_weight)
        if self.add_self_loops:
            graph = add_remaining_self_loops(graph, self.fill_value)  # A~ = A + I (structure cached on graph)
        h = self.lin(x)  # (N, C_out)
        out = self.propagate(graph, h, normalize="gcn" if self.normalize else None)  # (N, C_out)
        return out if self.bias is None else out + self.bias


# --------------------------------------------------------------------------------------------------
# Graph attention (seed section 17)
# --------------------------------------------------------------------------------------------------


class GATConv(nn.Module):
    """Graph attention (Velickovic et al. 2018, "Graph Attention Networks", eq. 1-6).

    Node-wise form, for head ``h``, node ``i`` and incoming edge ``e = (j -> i)``:

        z_j      = W_h x_j                                              (C features per head)
        s_e      = LeakyReLU(a_src_h . z_j + a_dst_h . z_i)              (slope 0.2)
        alpha_e  = softmax of s over the edges arriving at i
        x_i'[h]  = sum over e = (j -> i) of alpha_e * z_j
        x_i'     = concat over heads of x_i'[h]  (or their mean, concat=False)  + b

    Matrix form, per head: ``X'_h = softmax_rows(LeakyReLU(1 (Z_h a_src_h)^T + (Z_h a_dst_h) 1^T) masked
    to the edges of A) Z_h``, where row ``i`` of the softmax ranges over ``i``'s incoming edges.

    The edge softmax and the weighted sum are one seam function, :func:`attention_aggregate` (the
    softmax couples all edges of a destination, so message and reduction cannot be split), called
    with this layer's ``backend``. With ``add_self_loops`` every node attends to itself once: existing
    loops are removed and one added per node, as PyG does. Differences from PyG's GATConv: no
    attention dropout, no edge features, no bipartite input, no residual.

    Args:
        in_channels: input width; out_channels: ``C``, the width of each head.
        heads: ``H``.
        concat: concatenate the heads (``H * C`` outputs) or average them (``C`` outputs).
        negative_slope: LeakyReLU slope of the scores.
        add_self_loops: let each node attend to itself.
        bias: add the learnable ``b``.
        backend: the attention-aggregation backend (``"reference"``, ``"triton"``, ...).

    Shapes:
        x ``(N, in_channels)`` -> ``(N, H * C)`` if concat else ``(N, C)``.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, *, concat: bool = True,
                 negative_slope: float = 0.2, add_self_loops: bool = True, bias: bool = True,
                 backend: str = "reference"):
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.add_self_loops = concat, negative_slope, add_self_loops
        self.backend = backend
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(heads, out_channels))
        self.bias = nn.Parameter(torch.zeros(heads * out_channels if concat else out_channels)) if bias else None
        _glorot_(self.lin.weight, in_channels, heads * out_channels)
        _glorot_(self.att_src, heads, out_channels)
        _glorot_(self.att_dst, heads, out_channels)

    def forward(self, graph: Graph, x: torch.Tensor) -> torch.Tensor:
        check_node_features("x", x, graph.num_nodes, dim=2)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have in_channels={self.in_channels} columns, got shape {tuple(x.shape)}")
        n, heads, channels = graph.num_nodes, self.heads, self.out_channels
        z = self.lin(x).view(n, heads, channels)  # (N, H, C)
        alpha_src = (z * self.att_src).sum(dim=-1)  # (N, H)
        alpha_dst = (z * self.att_dst).sum(dim=-1)  # (N, H)
        if self.add_self_loops:
            graph = add_self_loops(remove_self_loops(graph))  # exactly one loop per node (cached on graph)
        out = attention_aggregate(graph, z, alpha_src, alpha_dst, negative_slope=self.negative_slope,
                                  backend=self.backend)  # (N, H, C)
        out = out.reshape(n, heads * channels) if self.concat else out.mean(dim=1)  # (N, H*C) or (N, C)
        return out if self.bias is None else out + self.bias
