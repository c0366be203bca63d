"""PyG's ``GCNConv`` and ``GATConv`` with their aggregation on fusebench's fused graph kernels.

The layers here *are* PyG's layers: subclasses of ``torch_geometric.nn.GCNConv`` / ``GATConv`` with PyG's
constructor, attributes, ``state_dict``, ``repr``, caching (``cached``, ``_cached_edge_index``), ``flow``,
hooks, ``decomposed_layers``, ``explain`` and error messages, because all of that is PyG's own code. Only the
place where PyG would form one message per edge and reduce them is replaced by a fused kernel:

* ``GCNConv``: PyG normalizes the graph (``gcn_norm``, with its caching) and calls ``propagate``; for an
  ``edge_index`` input our ``propagate`` runs the weighted sum on ``kernels/spmm.py`` (CSR, no ``(E, F)``
  message tensor), and for a sparse adjacency input PyG itself calls ``message_and_aggregate``, which runs
  the same kernel. A static-graph input ``x (B, N, F)`` is aggregated as one ``(N, B*F)`` matrix.
* ``GATConv``: the edge softmax couples every edge of a destination, so PyG computes it in ``edge_updater``
  and aggregates in ``propagate``; ``forward`` runs both at once on ``kernels/gat.py`` (scores, softmax and
  weighted sum in one pass, no ``(E, H)`` coefficient tensor), with PyG's projection, self-loop rule,
  concatenation and bias around it.

    from fusebench.integrations.pyg import swap_convs
    model = swap_convs(model)  # every torch_geometric GCNConv / GATConv -> the drop-in, same weights

When PyG's own path runs instead (``fallback``): whatever the kernel does not compute, or whatever needs the
per-edge messages, runs PyG's unfused path on the same module, so the result is PyG's:

* silently, where PyG's feature *is* the message path: a registered message-passing hook, ``explain=True``,
  a ``size`` other than ``(N, N)``; and TorchScript (``torch.jit.script`` gets a plain PyG layer with the
  same weights, since the kernels are Python: warned once);
* with a one-time ``UserWarning`` naming the feature (``fallback="warn"``, the default) or a
  ``NotImplementedError`` naming it (``fallback="raise"``, for benchmarks that must time the kernel):
  ``return_attention_weights``, ``edge_dim``/``edge_attr``, ``residual``, attention ``dropout`` in training
  mode, bipartite inputs, float64 and other dtypes than float16/bfloat16/float32, an aggregation other than
  PyG's ``"add"``, and CPU tensors when the Triton interpreter is off.

``decomposed_layers`` is honoured by running fused anyway: it exists to bound the ``(E, F)`` message tensor,
which the fused path never allocates; the output is the same.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch_geometric.nn as pyg_nn
from torch import nn
from torch_geometric.typing import OptPairTensor, OptTensor
from torch_geometric.utils import add_self_loops, remove_self_loops

from reference import gnn
from reference.graph import Graph

__all__ = ["GCNConv", "GATConv", "swap_convs", "as_graph", "FALLBACKS"]

DEFAULT_BACKEND = "triton"
FALLBACKS = ("warn", "raise")
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# --------------------------------------------------------------------------------------------------
# PyG's graph forms -> reference.graph.Graph
# --------------------------------------------------------------------------------------------------


def _is_sparse_tensor(edge_index) -> bool:
    """torch_sparse.SparseTensor (PyG's placeholder class when torch_sparse is absent never gets built)."""
    from torch_geometric.typing import SparseTensor

    return isinstance(edge_index, SparseTensor)


def as_graph(edge_index, num_nodes: int, edge_weight: torch.Tensor | None = None) -> Graph:
    """PyG's ``edge_index`` (``(2, E)``: row 0 sources, row 1 destinations) or transposed adjacency ``adj_t``
    (torch sparse COO/CSR or ``SparseTensor``, rows are destinations, values are weights) as a Graph."""
    if _is_sparse_tensor(edge_index):
        destination, source, value = edge_index.coo()
    elif isinstance(edge_index, torch.Tensor) and edge_index.layout == torch.sparse_coo:
        adjacency = edge_index.coalesce()
        (destination, source), value = adjacency.indices(), adjacency.values()
    elif isinstance(edge_index, torch.Tensor) and edge_index.layout == torch.sparse_csr:
        rowptr, source, value = edge_index.crow_indices(), edge_index.col_indices(), edge_index.values()
        destination = torch.repeat_interleave(torch.arange(rowptr.numel() - 1, device=rowptr.device), rowptr.diff())
    elif isinstance(edge_index, torch.Tensor) and edge_index.layout == torch.strided:
        return Graph(edge_index, num_nodes, edge_weight)
    else:
        raise TypeError(f"edge_index must be a (2, E) tensor, a torch sparse COO/CSR adjacency or a SparseTensor, "
                        f"got {type(edge_index).__name__} ({getattr(edge_index, 'layout', '')})")
    edge_index = torch.stack([source, destination.to(source.dtype)])  # (2, E)
    return Graph(edge_index, num_nodes, value if edge_weight is None else edge_weight)


class _GraphCache:
    """The Graph of the last ``(2, E)`` index tensor seen, reused while that very tensor comes back unchanged
    (``cached=True`` hands the same normalized tensors back every call): its CSR is built once."""

    def __init__(self):
        self._key = None
        self._graph = None

    def get(self, edge_index: torch.Tensor, num_nodes: int) -> Graph:
        key = (edge_index._version, num_nodes)
        if self._graph is None or self._key[0] is not edge_index or self._key[1:] != key:
            self._key, self._graph = (edge_index, *key), Graph(edge_index, num_nodes)
        return self._graph


_LAYOUTS = (torch.strided, torch.sparse_coo, torch.sparse_csr)  # edge_index (2, E) and the adjacencies PyG reads

_WARNED: set[tuple[str, str]] = set()


_MESSAGE_PASSING_HOOKS = tuple(f"_{stage}_forward{kind}_hooks" for stage in (
    "propagate", "message", "aggregate", "message_and_aggregate", "edge_update") for kind in ("_pre", ""))


def _has_message_hooks(conv: pyg_nn.MessagePassing) -> bool:
    """A hook registered on one of PyG's message-passing stages (module forward hooks are not among them)."""
    return any(len(getattr(conv, name)) for name in _MESSAGE_PASSING_HOOKS)


class _FusedPath:
    """What the two drop-ins share: the backend, the fallback policy and the 'can the kernel run this' checks."""

    backend: str
    fallback: str

    def _init_fused(self, backend: str, fallback: str) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        self.backend, self.fallback = backend, fallback
        self._graphs = _GraphCache()
        # PyG keeps the general propagate as ``_orig_propagate`` (for explain and decomposed_layers) by reading
        # the class attribute when it first generates a class's TorchScript-ready one; a subclass created after
        # PyG's own class reads the *generated* one of its parent instead, which has no explain support.
        cls = type(self)
        generated = f"{cls.__module__}_{cls.__name__}"  # PyG's module-name prefix for a class's generated code
        if cls.propagate.__module__.startswith(generated):
            cls._orig_propagate = pyg_nn.MessagePassing.propagate
        if cls.edge_updater.__module__.startswith(generated):
            cls._orig_edge_updater = pyg_nn.MessagePassing.edge_updater
        decomposed, self._decomposed_layers = self._decomposed_layers, 1
        self.decomposed_layers = decomposed  # PyG's setter again, now binding the general propagate

    def _kernel_refuses(self, x: torch.Tensor) -> str | None:
        """Why the kernel cannot run on ``x`` (a feature to name), or None."""
        if self.backend != "triton":  # the plain reference seam runs every floating dtype on every device
            return None
        if x.dtype not in KERNEL_DTYPES:
            return f"dtype {x.dtype} (the kernels run float16, bfloat16 and float32)"
        if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            return f"{x.device} tensors without the Triton interpreter (set TRITON_INTERPRET=1 before import)"
        return None

    def _pyg_path(self, feature: str | None) -> bool:
        """True when PyG's own path must run; warns once per (class, feature) or raises, per ``fallback``."""
        if feature is None:
            return False
        if self.fallback == "raise":
            raise NotImplementedError(f"the fusebench {type(self).__name__} kernel does not support {feature} "
                                      "(fallback='raise')")
        if (type(self).__name__, feature) not in _WARNED:
            _WARNED.add((type(self).__name__, feature))
            warnings.warn(f"fusebench {type(self).__name__}: {feature} runs on PyG's own (unfused) path",
                          UserWarning, stacklevel=3)
        return True

    def _message_path_needed(self) -> bool:
        """PyG features that are the per-edge message path itself (run there, silently)."""
        return bool(self.explain) or _has_message_hooks(self)

    def __prepare_scriptable__(self):
        """``torch.jit.script``: the kernels are Python, so the scripted module is PyG's own layer with these
        weights (warned once): scriptable exactly as PyG's is, without the fused kernels."""
        self._pyg_path("TorchScript (torch.jit.script)")
        return _as_pyg(self)


# --------------------------------------------------------------------------------------------------
# The layers
# --------------------------------------------------------------------------------------------------


class GCNConv(_FusedPath, pyg_nn.GCNConv):
    """PyG's ``GCNConv`` (Kipf and Welling 2017) whose neighbour sum runs on ``kernels/spmm.py``.

    ``X' = D~^-1/2 A~ D~^-1/2 X W + b`` (both forms in ``reference.gnn.GCNConv``): PyG computes the
    normalized edge weights (``gcn_norm``, cached as PyG caches them); the fused kernel computes
    ``out[i] = sum over e = (j -> i) of w_e x[j]`` without an ``(E, F)`` message tensor.

    Args:
        PyG's (``in_channels``, ``out_channels``, ``improved``, ``cached``, ``add_self_loops``, ``normalize``,
            ``bias``, and MessagePassing's ``aggr``, ``flow``, ``node_dim``, ``decomposed_layers``).
        backend: ``"triton"`` (kernels/spmm.py) or ``"reference"`` (the plain seam of reference/gnn.py).
        fallback: ``"warn"`` or ``"raise"`` for what the kernel cannot run (module docstring).

    Shapes:
        x ``(N, in_channels)`` or ``(B, N, in_channels)``, edge_index ``(2, E)`` or adj_t ``(N, N)``,
        edge_weight ``(E,)`` -> ``(N, out_channels)`` or ``(B, N, out_channels)``.
    """

    def __init__(self, in_channels: int, out_channels: int, improved: bool = False, cached: bool = False,
                 add_self_loops: bool | None = None, normalize: bool = True, bias: bool = True, *,
                 backend: str = DEFAULT_BACKEND, fallback: str = "warn", **kwargs):
        super().__init__(in_channels, out_channels, improved=improved, cached=cached,
                         add_self_loops=add_self_loops, normalize=normalize, bias=bias, **kwargs)
        self._init_fused(backend, fallback)

    def _fusable(self, x: torch.Tensor, size) -> bool:
        if self._message_path_needed() or (size is not None and size[0] != size[1]):
            return False
        aggr = None if self.aggr in ("add", "sum") else f"aggr={self.aggr!r} (the kernel sums)"
        return not self._pyg_path(aggr or self._kernel_refuses(x))

    def _fused_sum(self, graph: Graph, x: torch.Tensor, edge_weight: torch.Tensor | None) -> torch.Tensor:
        """``out[i] = sum over e = (j -> i) of w_e x[j]`` on the kernel; ``x``'s node axis is ``node_dim``."""
        nodes_first = x.movedim(self.node_dim, 0)  # (N, ..., C)
        flat = nodes_first.reshape(nodes_first.shape[0], -1)  # (N, B*C): a static graph is one wider matrix
        out = gnn.aggregate(graph, flat, edge_weight=edge_weight, backend=self.backend)  # (N, B*C), the seam
        return out.view(nodes_first.shape).movedim(0, self.node_dim)

    def propagate(self, edge_index, size=None, **kwargs):
        """PyG's ``propagate``; an ``(2, E)`` ``edge_index`` runs the fused weighted sum (module docstring)."""
        x, edge_weight = kwargs.get("x"), kwargs.get("edge_weight")
        fused = (isinstance(edge_index, torch.Tensor) and edge_index.layout == torch.strided
                 and isinstance(x, torch.Tensor) and x.layout == torch.strided and self._fusable(x, size))
        if not fused:  # PyG's general propagate (its generated one for GCNConv has no explain support)
            return pyg_nn.MessagePassing.propagate(self, edge_index, size=size, **kwargs)
        self._check_input(edge_index, size)  # PyG's own messages for a malformed edge_index
        if self.flow == "target_to_source":
            edge_index = edge_index.flip(0)  # row 0 sources, row 1 destinations
        graph = self._graphs.get(edge_index, x.shape[self.node_dim])
        return self._fused_sum(graph, x, edge_weight)

    def message_and_aggregate(self, adj_t, x: torch.Tensor) -> torch.Tensor:
        """Where PyG fuses for a sparse adjacency ``adj_t`` (rows are destinations): the kernel."""
        if _is_sparse_tensor(adj_t) or not self._fusable(x, None):
            return super().message_and_aggregate(adj_t, x)
        return self._fused_sum(as_graph(adj_t, x.shape[self.node_dim]), x, None)


class GATConv(_FusedPath, pyg_nn.GATConv):
    """PyG's ``GATConv`` (Velickovic et al. 2018) whose edge softmax and weighted sum run on ``kernels/gat.py``.

    Both forms of the math are in ``reference.gnn.GATConv``. ``forward`` is PyG's: the projection ``lin``,
    the per-node scores ``alpha_src``/``alpha_dst`` (``(N, H)``), PyG's self-loop rule (existing loops
    removed, one per node added), concatenation or mean of the heads, bias; between them, the fused
    ``attention_aggregate`` replaces PyG's ``edge_updater`` + ``propagate``.

    Args:
        PyG's (``in_channels``, ``out_channels``, ``heads``, ``concat``, ``negative_slope``, ``dropout``,
            ``add_self_loops``, ``edge_dim``, ``fill_value``, ``bias``, ``residual``, MessagePassing's options).
        backend: ``"triton"`` (kernels/gat.py) or ``"reference"`` (the plain seam of reference/gnn.py).
        fallback: ``"warn"`` or ``"raise"`` for what the kernel cannot run (module docstring).

    Shapes:
        x ``(N, in_channels)``, edge_index ``(2, E)`` or adj_t ``(N, N)`` -> ``(N, H*C)`` or ``(N, C)``.
    """

    # PyG's generated (TorchScript-ready) propagate/edge_updater read these argument types from the class,
    # else from comments in the source of a class *named* GATConv: ours shadows PyG's there (same name).
    propagate_type = {"x": OptPairTensor, "alpha": torch.Tensor}
    edge_updater_type = {"alpha": OptPairTensor, "edge_attr": OptTensor}

    def __init__(self, in_channels, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True,
                 edge_dim: int | None = None, fill_value="mean", bias: bool = True, residual: bool = False, *,
                 backend: str = DEFAULT_BACKEND, fallback: str = "warn", **kwargs):
        super().__init__(in_channels, out_channels, heads, concat=concat, negative_slope=negative_slope,
                         dropout=dropout, add_self_loops=add_self_loops, edge_dim=edge_dim, fill_value=fill_value,
                         bias=bias, residual=residual, **kwargs)
        self._init_fused(backend, fallback)

    def _kernel_feature_missing(self, x, edge_index, edge_attr, size, return_attention_weights) -> str | None:
        """The first feature of this call the fused kernel does not compute, or None."""
        if return_attention_weights is not None:
            return "return_attention_weights (the kernel never stores the coefficients)"
        if self.lin is None or not isinstance(x, torch.Tensor):
            return "bipartite inputs (x or in_channels as a pair)"
        if self.edge_dim is not None or edge_attr is not None:
            return "edge features (edge_dim / edge_attr)"
        if self.res is not None:
            return "residual=True"
        if self.training and self.dropout > 0:
            return f"attention dropout in training mode (dropout={self.dropout})"
        if self.aggr not in ("add", "sum"):
            return f"aggr={self.aggr!r} (the kernel sums)"
        if _is_sparse_tensor(edge_index):
            return "torch_sparse.SparseTensor inputs"
        return self._kernel_refuses(x)

    def forward(self, x, edge_index, edge_attr=None, size=None, return_attention_weights=None):
        """PyG's ``GATConv.forward``, with the edge softmax and aggregation fused (class docstring)."""
        pyg_path = (self._message_path_needed() or (isinstance(x, torch.Tensor) and x.dim() != 2)  # PyG's error
                    or (isinstance(edge_index, torch.Tensor) and edge_index.layout not in _LAYOUTS)  # PyG's error
                    or (size is not None and isinstance(x, torch.Tensor) and tuple(size) != (len(x), len(x))))
        if pyg_path or self._pyg_path(self._kernel_feature_missing(x, edge_index, edge_attr, size,
                                                                   return_attention_weights)):
            return super().forward(x, edge_index, edge_attr, size, return_attention_weights)
        n, heads, channels = x.shape[0], self.heads, self.out_channels
        z = self.lin(x).view(n, heads, channels)  # (N, H, C)
        alpha_src = (z * self.att_src).sum(dim=-1)  # (N, H)
        alpha_dst = (z * self.att_dst).sum(dim=-1)  # (N, H)
        if isinstance(edge_index, torch.Tensor) and edge_index.layout == torch.strided:
            if self.add_self_loops:  # PyG's rule: one loop per node, existing ones removed
                edge_index, _ = add_self_loops(remove_self_loops(edge_index)[0], num_nodes=n)
            self._check_input(edge_index, size)  # in PyG's order, so that a bad edge_index raises PyG's error
            if self.flow == "target_to_source":
                edge_index = edge_index.flip(0)
            graph = self._graphs.get(edge_index, n)
        else:
            graph = as_graph(edge_index, n)
            if self.add_self_loops:
                loops = torch.arange(n, device=x.device, dtype=graph.edge_index.dtype)
                kept = graph.edge_index[:, graph.edge_index[0] != graph.edge_index[1]]
                graph = Graph(torch.cat([kept, torch.stack([loops, loops])], dim=1), n)
        out = gnn.attention_aggregate(graph, z, alpha_src, alpha_dst, negative_slope=self.negative_slope,
                                      backend=self.backend)  # (N, H, C), the seam
        out = out.reshape(n, heads * channels) if self.concat else out.mean(dim=1)  # (N, H*C) or (N, C)
        return out if self.bias is None else out + self.bias


# --------------------------------------------------------------------------------------------------
# Converting PyG layers and models (and back, for TorchScript)
# --------------------------------------------------------------------------------------------------


def _conv_arguments(conv: nn.Module) -> dict:
    """The constructor arguments that rebuild ``conv`` (a PyG GCNConv or GATConv, or a drop-in)."""
    common = dict(aggr=conv.aggr, flow=conv.flow, decomposed_layers=conv.decomposed_layers)
    if isinstance(conv, pyg_nn.GCNConv):
        return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, improved=conv.improved,
                    cached=conv.cached, add_self_loops=conv.add_self_loops, normalize=conv.normalize,
                    bias=conv.bias is not None, node_dim=conv.node_dim, **common)  # GATConv fixes node_dim=0
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, heads=conv.heads, concat=conv.concat,
                negative_slope=conv.negative_slope, dropout=conv.dropout, add_self_loops=conv.add_self_loops,
                edge_dim=conv.edge_dim, fill_value=conv.fill_value, bias=conv.bias is not None,
                residual=conv.res is not None, **common)


def _rebuilt(conv: nn.Module, cls: type, **extra) -> nn.Module:
    new = cls(**_conv_arguments(conv), **extra)
    reference = next(iter(conv.parameters()), None)
    if reference is not None:
        new = new.to(device=reference.device, dtype=reference.dtype)
    new.load_state_dict(conv.state_dict())
    return new.train(conv.training)


def _as_pyg(conv: _FusedPath) -> nn.Module:
    """The plain torch_geometric layer with ``conv``'s arguments and weights."""
    return _rebuilt(conv, pyg_nn.GCNConv if isinstance(conv, GCNConv) else pyg_nn.GATConv)


def _drop_in_for(conv: nn.Module, backend: str, fallback: str) -> nn.Module | None:
    """The drop-in equivalent of a torch_geometric conv (same arguments, same weights), or None."""
    for pyg_class, ours in ((pyg_nn.GCNConv, GCNConv), (pyg_nn.GATConv, GATConv)):
        if type(conv) is pyg_class:
            return _rebuilt(conv, ours, backend=backend, fallback=fallback)
    return None


def swap_convs(model: nn.Module, *, backend: str = DEFAULT_BACKEND, fallback: str = "warn") -> nn.Module:
    """Replace, in place, every ``torch_geometric.nn.GCNConv`` / ``GATConv`` of ``model`` by the drop-in with the
    same arguments and weights; returns ``model`` (or the drop-in itself when ``model`` is one such conv).

    Raises ``ValueError`` when the model holds no such layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    whole = _drop_in_for(model, backend, fallback)
    if whole is not None:
        return whole
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _drop_in_for(child, backend, fallback)
            if new is not None:
                setattr(parent, name, new)  # works for ModuleList entries too (their names are indices)
                swapped += 1
    if swapped == 0:
        raise ValueError(f"{type(model).__name__} holds no torch_geometric GCNConv or GATConv to swap")
    return model
