"""Drop-in replacements for PyG's ``GCNConv`` and ``GATConv`` that run on fusebench's fused graph kernels.

They take PyG's constructor arguments, hold PyG's ``state_dict`` keys and shapes, and are called like
PyG's layers, so a trained PyG model can be moved onto the kernels and compared:

    from fusebench.integrations.pyg import swap_convs
    model = swap_convs(model)  # every torch_geometric GCNConv / GATConv -> the drop-in, same weights

The math is PyG's (see ``reference/gnn.py`` for both forms of each layer); the hot core goes through the
aggregation seam of ``reference.gnn`` with ``backend="triton"`` by default: ``kernels/spmm.py`` for
``GCNConv`` (CSR sum with the GCN scaling fused), ``kernels/gat.py`` for ``GATConv`` (edge softmax and
weighted sum in one pass). ``backend="reference"`` runs the same layer on the plain PyTorch reference.

Input forms accepted for ``edge_index``, as PyG reads them:

* an ``(2, E)`` integer tensor (row 0 = source ``j``, row 1 = destination ``i``), with ``edge_weight (E,)``
  for ``GCNConv``;
* a torch sparse COO or CSR adjacency ``adj_t (N, N)`` whose **rows are destinations** (PyG's ``adj_t``),
  values as edge weights. PyG adds self-loops to a sparse ``GCNConv`` input as ``A + I`` (an existing loop
  gains weight) where an ``edge_index`` input gets ``add_remaining_self_loops`` (one loop per node); the
  drop-in follows PyG in both. Sparse CSC raises ``NotImplementedError``, as in PyG;
* ``torch_sparse.SparseTensor`` when torch_sparse is installed (converted through its COO form).

Not supported (``NotImplementedError`` naming the feature): attention dropout in training mode, edge
features (``edge_dim``/``edge_attr``), bipartite inputs (``in_channels`` or ``x`` as pairs), ``residual``,
``return_attention_weights``, lazy ``in_channels=-1`` and other aggregations than PyG's defaults.

One PyG quirk is reproduced on purpose: ``GCNConv(improved=True)`` called with an ``edge_index`` and no
``edge_weight`` adds loops of weight 1, not 2 (PyG 2.8's ``add_remaining_self_loops`` drops the fill value
without edge attributes).
"""

from __future__ import annotations

import torch
from torch import nn

from reference import gnn
from reference.graph import Graph, add_remaining_self_loops, add_self_loops

__all__ = ["GCNConv", "GATConv", "swap_convs", "as_graph"]

DEFAULT_BACKEND = "triton"


# --------------------------------------------------------------------------------------------------
# PyG's input forms -> reference.graph.Graph
# --------------------------------------------------------------------------------------------------


def _is_sparse_tensor(edge_index) -> bool:
    """torch_sparse.SparseTensor (PyG's placeholder class when torch_sparse is absent never gets built)."""
    from torch_geometric.typing import SparseTensor

    return isinstance(edge_index, SparseTensor)


def as_graph(edge_index, num_nodes: int, edge_weight: torch.Tensor | None = None) -> tuple[Graph, bool]:
    """``(graph, from_adjacency)``: PyG's ``edge_index`` in any accepted form as a Graph on ``num_nodes``.

    ``from_adjacency`` is True for sparse adjacency inputs (their values are the edge weights, and
    ``edge_weight`` must then be None).
    """
    if _is_sparse_tensor(edge_index):
        destination, source, value = edge_index.coo()  # adj_t: rows are destinations
        adjacency_shape = tuple(edge_index.sizes())
    elif isinstance(edge_index, torch.Tensor) and edge_index.layout == torch.sparse_coo:
        adjacency = edge_index.coalesce()
        (destination, source), value = adjacency.indices(), adjacency.values()
        adjacency_shape = tuple(edge_index.shape)
    elif isinstance(edge_index, torch.Tensor) and edge_index.layout == torch.sparse_csr:
        rowptr, source, value = edge_index.crow_indices(), edge_index.col_indices(), edge_index.values()
        destination = torch.repeat_interleave(torch.arange(rowptr.numel() - 1, device=rowptr.device), rowptr.diff())
        adjacency_shape = tuple(edge_index.shape)
    elif isinstance(edge_index, torch.Tensor) and edge_index.layout != torch.strided:
        raise NotImplementedError(f"edge_index as a {edge_index.layout} tensor (PyG reads COO or CSR adjacencies; "
                                  "CSC is not supported)")
    elif isinstance(edge_index, torch.Tensor):
        return Graph(edge_index, num_nodes, edge_weight), False
    else:
        raise TypeError(f"edge_index must be a (2, E) tensor, a torch sparse COO/CSR adjacency or a SparseTensor, "
                        f"got {type(edge_index).__name__}")
    if adjacency_shape != (num_nodes, num_nodes):
        raise ValueError(f"the sparse adjacency must have shape (N, N) = {(num_nodes, num_nodes)} for x's N rows, "
                         f"got {adjacency_shape}")
    if edge_weight is not None:
        raise ValueError("edge_weight must be None with a sparse adjacency: its values are the edge weights")
    edge_index = torch.stack([source, destination.to(source.dtype)])  # (2, E)
    return Graph(edge_index, num_nodes, value), True


class _GraphCache:
    """The Graph of the last ``edge_index`` seen, reused while the very same tensor comes back unchanged,
    so that a layer called on one graph validates it and builds its CSR once."""

    def __init__(self):
        self._key = None
        self._value = None

    def get(self, edge_index, num_nodes: int, edge_weight):
        if not isinstance(edge_index, torch.Tensor) or edge_index.layout != torch.strided:
            return as_graph(edge_index, num_nodes, edge_weight)
        key = (edge_index, edge_index._version, num_nodes)
        if self._key is None or self._key[0] is not edge_index or self._key[1:] != key[1:]:
            self._key, self._value = key, as_graph(edge_index, num_nodes)[0]
        return self._value.with_edge_weight(edge_weight), False


def _reject(feature: str) -> None:
    raise NotImplementedError(f"the fusebench drop-in layer does not support {feature}")


def _check_x(x, in_channels: int) -> None:
    if isinstance(x, (tuple, list)):
        _reject("bipartite inputs (x as a pair of tensors)")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != in_channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (N, in_channels={in_channels}) tensor, got {shape}")


def _check_constructor(in_channels, kwargs: dict, allowed_aggr: tuple[str, ...]) -> None:
    if isinstance(in_channels, (tuple, list)):
        _reject("bipartite inputs (in_channels as a pair)")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int (lazy in_channels=-1 is not supported), "
                         f"got {in_channels!r}")
    aggr = kwargs.pop("aggr", allowed_aggr[0])
    if aggr not in allowed_aggr:
        _reject(f"aggr={aggr!r} (PyG's default {allowed_aggr[0]!r} only)")
    if kwargs:
        raise TypeError(f"unexpected keyword arguments {sorted(kwargs)} (PyG's MessagePassing options are not "
                        "supported by the drop-in)")


# --------------------------------------------------------------------------------------------------
# The layers
# --------------------------------------------------------------------------------------------------


class GCNConv(gnn.GCNConv):
    """PyG's ``GCNConv`` (Kipf and Welling 2017) on the fused SpMM kernel; see ``reference.gnn.GCNConv``.

    ``X' = D~^-1/2 A~ D~^-1/2 X W + b``. State dict: ``lin.weight (out, in)``, ``bias (out,)``, as PyG.

    Args:
        in_channels, out_channels, improved, cached, add_self_loops, normalize, bias: PyG's meaning;
            ``cached=True`` keeps the self-looped graph of the first call and reuses it (transductive use).
        backend: the aggregation backend, ``"triton"`` (kernels/spmm.py) or ``"reference"``.

    Shapes:
        x ``(N, in_channels)``, edge_index ``(2, E)`` or adj_t ``(N, N)``, edge_weight ``(E,)``
        -> ``(N, out_channels)``.
    """

    def __init__(self, in_channels: int, out_channels: int, improved: bool = False, cached: bool = False,
                 add_self_loops: bool | None = None, normalize: bool = True, bias: bool = True, *,
                 backend: str = DEFAULT_BACKEND, **kwargs):
        _check_constructor(in_channels, kwargs, ("add", "sum"))
        add_self_loops = normalize if add_self_loops is None else add_self_loops
        if add_self_loops and not normalize:  # PyG refuses it too
            raise ValueError("GCNConv does not support add_self_loops=True with normalize=False")
        super().__init__(in_channels, out_channels, improved=improved, add_self_loops=add_self_loops,
                         normalize=normalize, bias=bias, backend=backend)
        self.improved, self.cached = improved, cached
        self._graphs = _GraphCache()
        self._cached_graph: Graph | None = None

    def reset_cache(self) -> None:
        """Forget the graph kept by ``cached=True``."""
        self._cached_graph = None

    def forward(self, x: torch.Tensor, edge_index, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        _check_x(x, self.in_channels)
        graph = self._cached_graph
        if graph is None:
            graph, from_adjacency = self._graphs.get(edge_index, x.shape[0], edge_weight)
            if self.add_self_loops and from_adjacency:
                graph = add_self_loops(graph, self.fill_value)  # PyG on sparse input: A + fill * I
            elif self.add_self_loops:
                fill = self.fill_value if graph.edge_weight is not None else 1.0  # PyG 2.8 (module docstring)
                graph = add_remaining_self_loops(graph, fill)
            if self.cached:
                self._cached_graph = graph
        h = self.lin(x)  # (N, C_out)
        out = self.propagate(graph, h, normalize="gcn" if self.normalize else None)  # (N, C_out), the seam
        return out if self.bias is None else out + self.bias

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, backend={self.backend!r})"


class GATConv(gnn.GATConv):
    """PyG's ``GATConv`` (Velickovic et al. 2018) on the fused GAT kernel; see ``reference.gnn.GATConv``.

    State dict: ``lin.weight (H*C, in)``, ``att_src``/``att_dst (1, H, C)``, ``bias``, as PyG.

    Args:
        in_channels, out_channels, heads, concat, negative_slope, dropout, add_self_loops, edge_dim,
            fill_value, bias, residual: PyG's meaning; ``dropout`` (on the attention coefficients) must be
            0 in training mode, ``edge_dim`` None, ``residual`` False.
        backend: the attention-aggregation backend, ``"triton"`` (kernels/gat.py) or ``"reference"``.

    Shapes:
        x ``(N, in_channels)``, edge_index ``(2, E)`` or adj_t ``(N, N)`` -> ``(N, H*C)`` or ``(N, C)``.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True,
                 edge_dim: int | None = None, fill_value="mean", bias: bool = True, residual: bool = False, *,
                 backend: str = DEFAULT_BACKEND, **kwargs):
        _check_constructor(in_channels, kwargs, ("add", "sum"))
        if edge_dim is not None:
            _reject(f"edge features (edge_dim={edge_dim})")
        if residual:
            _reject("residual=True")
        super().__init__(in_channels, out_channels, heads, concat=concat, negative_slope=negative_slope,
                         add_self_loops=add_self_loops, bias=bias, backend=backend)
        self.dropout, self.fill_value = dropout, fill_value
        # PyG's shapes (1, H, C): the reference broadcasts them against (N, H, C) the same way.
        self.att_src = nn.Parameter(self.att_src.detach().unsqueeze(0))
        self.att_dst = nn.Parameter(self.att_dst.detach().unsqueeze(0))
        self._graphs = _GraphCache()

    def forward(self, x: torch.Tensor, edge_index, edge_attr: torch.Tensor | None = None, size=None,
                return_attention_weights: bool | None = None) -> torch.Tensor:
        _check_x(x, self.in_channels)
        if self.training and self.dropout > 0:
            _reject(f"attention dropout in training mode (dropout={self.dropout}; call model.eval() or use 0)")
        if edge_attr is not None:
            _reject("edge features (edge_attr)")
        if return_attention_weights:
            _reject("return_attention_weights=True (the kernel never stores the coefficients)")
        if size is not None and tuple(size) != (x.shape[0], x.shape[0]):
            _reject(f"size={tuple(size)} other than (N, N) (bipartite message passing)")
        graph, _ = self._graphs.get(edge_index, x.shape[0], None)
        return super().forward(graph.with_edge_weight(None), x)  # GAT ignores edge weights, as PyG without edge_dim

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, " \
               f"backend={self.backend!r})"


# --------------------------------------------------------------------------------------------------
# Converting PyG layers and models
# --------------------------------------------------------------------------------------------------


def _drop_in_for(conv: nn.Module, backend: str) -> nn.Module | None:
    """The drop-in equivalent of a torch_geometric conv (same arguments, same weights), or None."""
    import torch_geometric.nn as pyg_nn

    if type(conv) is pyg_nn.GCNConv:
        new = GCNConv(conv.in_channels, conv.out_channels, improved=conv.improved, cached=conv.cached,
                      add_self_loops=conv.add_self_loops, normalize=conv.normalize, bias=conv.bias is not None,
                      backend=backend)
    elif type(conv) is pyg_nn.GATConv:
        if getattr(conv, "lin", None) is None:
            _reject("bipartite GATConv (separate lin_src/lin_dst)")
        new = GATConv(conv.in_channels, conv.out_channels, conv.heads, concat=conv.concat,
                      negative_slope=conv.negative_slope, dropout=conv.dropout, add_self_loops=conv.add_self_loops,
                      edge_dim=conv.edge_dim, fill_value=conv.fill_value, bias=conv.bias is not None,
                      residual=conv.res is not None, backend=backend)
    else:
        return None
    reference = next(iter(conv.parameters()), None)
    if reference is not None:
        new = new.to(device=reference.device, dtype=reference.dtype)
    new.load_state_dict(conv.state_dict())
    return new.train(conv.training)


def swap_convs(model: nn.Module, *, backend: str = DEFAULT_BACKEND) -> nn.Module:
    """Replace, in place, every ``torch_geometric.nn.GCNConv`` / ``GATConv`` of ``model`` by the drop-in with the
    same arguments and weights; returns ``model`` (or the drop-in itself when ``model`` is one such conv).

    Raises ``ValueError`` when the model holds no such layer, ``NotImplementedError`` for a layer whose
    options the drop-in does not support.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    whole = _drop_in_for(model, backend)
    if whole is not None:
        return whole
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _drop_in_for(child, backend)
            if new is not None:
                setattr(parent, name, new)  # works for ModuleList entries too (their names are indices)
                swapped += 1
    if swapped == 0:
        raise ValueError(f"{type(model).__name__} holds no torch_geometric GCNConv or GATConv to swap")
    return model
