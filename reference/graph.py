"""Graph containers and conversions: the data every graph reference and graph kernel reads.

A directed graph on ``N`` nodes is stored as a COO edge list (PyG's ``edge_index`` convention):

    edge_index: (2, E) integer tensor, row 0 = source j, row 1 = destination i; edge e is j -> i.

Messages flow **source -> destination**: node ``i`` aggregates over its incoming edges. The sparse
matrix this describes is ``A[i, j] = sum of w_e over edges e = (j -> i)`` (rows = destinations), so
neighbour aggregation is the sparse-dense product ``A @ X``. Duplicate edges are separate edges (they
count twice), and a self-loop ``i -> i`` is an ordinary edge.

Two compressed layouts serve kernels (both computed once and cached on the :class:`Graph`):

* **CSR** (rows = destination nodes): ``rowptr (N+1,)``, ``col (E,)`` = the source of each edge, and
  ``perm (E,)`` with ``perm[k]`` = the edge id stored at CSR position ``k`` (so edge weights in CSR order
  are ``edge_weight[perm]``). A forward "gather from sources, reduce per destination" kernel walks it.
* **CSC** (rows = source nodes): the same triple for the transposed matrix; ``col`` holds destinations.
  The backward of aggregation (``dX = A^T @ dOut``) walks it.

Within a row, edges keep their original order (a stable sort by row), so ``edge_index[:, perm]`` equals
the COO expansion of the CSR triple exactly. Index dtypes int32 and int64 are both accepted and kept:
the compressed layouts use the dtype of ``edge_index``.

GCN normalization (Kipf and Welling 2017, eq. 2) is its own function, :func:`gcn_norm`, following PyG's
convention so PyG can be the oracle: self-loops are added with PyG's "remaining" rule, the degree is the
weighted in-degree at the destination, both ends of an edge use that one degree vector, and a node of
degree zero gets ``deg^-1/2 = 0`` rather than infinity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "Graph",
    "Compressed",
    "coo_to_compressed",
    "compressed_to_coo",
    "validate_compressed",
    "check_index_vector",
    "check_rowptr",
    "add_self_loops",
    "add_remaining_self_loops",
    "remove_self_loops",
    "in_degree",
    "out_degree",
    "gcn_norm",
    "gcn_edge_scale",
    "check_node_features",
]

_INDEX_DTYPES = (torch.int32, torch.int64)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _validate_num_nodes(num_nodes) -> int:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int):
        raise TypeError(f"num_nodes must be an int, got {type(num_nodes).__name__}")
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    return num_nodes


def _validate_index_range(name: str, index: torch.Tensor, num_nodes: int) -> None:
    if index.numel() == 0:
        return
    low, high = int(index.min()), int(index.max())
    if low < 0:
        raise ValueError(f"{name} must hold node ids in [0, num_nodes={num_nodes}), found negative index {low}")
    if high >= num_nodes:
        raise ValueError(f"{name} must hold node ids in [0, num_nodes={num_nodes}), found index {high}")


def _validate_edge_index(edge_index, num_nodes: int) -> None:
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dtype not in _INDEX_DTYPES:
        raise TypeError(f"edge_index must be int32 or int64, got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.dtype == torch.int32 and edge_index.shape[1] >= 2**31:
        raise ValueError(f"edge_index: {edge_index.shape[1]} edges do not fit int32 offsets; use int64")
    _validate_index_range("edge_index", edge_index, num_nodes)


def _validate_edge_weight(edge_weight, num_edges: int, name: str = "edge_weight") -> None:
    if edge_weight is None:
        return
    if not isinstance(edge_weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(edge_weight).__name__}")
    if not edge_weight.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {edge_weight.dtype}")
    if tuple(edge_weight.shape) != (num_edges,):
        raise ValueError(f"{name} must have shape (E,) = ({num_edges},), got {tuple(edge_weight.shape)}")


def check_node_features(name: str, x, num_nodes: int, *, dim: int | None = None) -> None:
    """Raise if ``x`` is not a floating tensor with ``num_nodes`` rows (and ``dim`` dimensions, if given)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if dim is not None and x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")
    if x.dim() < 1 or x.shape[0] != num_nodes:
        raise ValueError(f"{name} must have num_nodes={num_nodes} rows, got shape {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------------
# Compressed layouts (CSR / CSC)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compressed:
    """A compressed sparse layout of an edge list.

    ``rowptr (N+1,)``: row ``r`` owns positions ``rowptr[r]:rowptr[r+1]``; ``col (E,)``: the other end
    of each edge; ``perm (E,)``: the edge id at each position. For CSR the rows are destinations and
    ``col`` holds sources; for CSC the rows are sources and ``col`` holds destinations. The graph kernels
    (``kernels/_csr.py``) read this very object.
    """

    rowptr: torch.Tensor
    col: torch.Tensor
    perm: torch.Tensor

    @property
    def num_rows(self) -> int:
        return self.rowptr.numel() - 1

    @property
    def num_edges(self) -> int:
        return self.col.numel()

    def row_ids(self) -> torch.Tensor:
        """The row of every position, ``(E,)``: the expansion of ``rowptr``."""
        return _expand_rowptr(self.rowptr)


def _expand_rowptr(rowptr: torch.Tensor) -> torch.Tensor:
    """``(N+1,) -> (E,)``: row ``r`` repeated ``rowptr[r+1] - rowptr[r]`` times, in ``rowptr``'s dtype."""
    counts = (rowptr[1:] - rowptr[:-1]).long()  # (N,)
    rows = torch.arange(counts.numel(), device=rowptr.device)
    return torch.repeat_interleave(rows, counts).to(rowptr.dtype)


def coo_to_compressed(rows: torch.Tensor, cols: torch.Tensor, num_rows: int) -> Compressed:
    """Group edges by ``rows`` (a stable sort, so edges keep their order within a row).

    Args:
        rows: ``(E,)`` the row of each edge (the destination for CSR, the source for CSC).
        cols: ``(E,)`` the other end of each edge.
        num_rows: the number of rows ``N``.
    """
    dtype = rows.dtype
    _, perm = torch.sort(rows.long(), stable=True)  # (E,) edge ids in row order
    counts = torch.bincount(rows.long(), minlength=num_rows)  # (N,)
    rowptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)
    rowptr[1:] = torch.cumsum(counts, dim=0)
    return Compressed(rowptr.to(dtype), cols[perm].to(dtype), perm.to(dtype))


def check_index_vector(name: str, t) -> None:
    """Raise unless ``t`` is a 1-D int32/int64 tensor (a layout's ``rowptr``, ``col`` or ``perm``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must be int32 or int64, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")


def check_rowptr(name: str, rowptr: torch.Tensor, num_edges: int) -> None:
    """Raise unless ``rowptr`` starts at 0, never decreases and ends at ``num_edges``."""
    if int(rowptr[0]) != 0:
        raise ValueError(f"{name} must start at 0, got {int(rowptr[0])}")
    decreasing = rowptr[1:] < rowptr[:-1]
    if decreasing.any():
        first = int(decreasing.nonzero()[0])
        raise ValueError(f"{name} must be non-decreasing (monotonic), but {name}[{first + 1}] < {name}[{first}]")
    if int(rowptr[-1]) != num_edges:
        raise ValueError(f"{name} must end at the edge count E={num_edges}, got {int(rowptr[-1])}")


def validate_compressed(rowptr, col, num_nodes: int, *, name: str = "rowptr") -> None:
    """Raise if ``(rowptr, col)`` is not a valid compressed layout over ``num_nodes`` nodes."""
    _validate_num_nodes(num_nodes)
    check_index_vector(name, rowptr)
    check_index_vector("col", col)
    if rowptr.numel() != num_nodes + 1:
        raise ValueError(f"{name} must have num_nodes + 1 = {num_nodes + 1} entries, got {rowptr.numel()}")
    check_rowptr(name, rowptr, col.numel())
    _validate_index_range("col", col, num_nodes)


def compressed_to_coo(rowptr: torch.Tensor, col: torch.Tensor, num_nodes: int, *,
                      rows_are: str = "destination") -> torch.Tensor:
    """Expand a CSR (``rows_are="destination"``) or CSC (``"source"``) layout back to ``edge_index``.

    Returns ``(2, E)`` in compressed order (row-major); with ``perm`` from :func:`coo_to_compressed`
    this equals ``edge_index[:, perm]``.
    """
    validate_compressed(rowptr, col, num_nodes)
    if rows_are not in ("destination", "source"):
        raise ValueError(f"rows_are must be 'destination' (CSR) or 'source' (CSC), got {rows_are!r}")
    rows = _expand_rowptr(rowptr).to(col.dtype)  # (E,)
    pair = (col, rows) if rows_are == "destination" else (rows, col)
    return torch.stack(pair).to(col.dtype)  # (2, E)


# --------------------------------------------------------------------------------------------------
# The graph container
# --------------------------------------------------------------------------------------------------


class Graph:
    """A directed graph: ``edge_index (2, E)`` (source, destination), ``num_nodes``, optional weights.

    Validated on construction. :meth:`csr` and :meth:`csc` are computed on first use and cached (a
    Graph is treated as immutable: operations such as :func:`add_self_loops` return a new one).

    Shapes:
        edge_index ``(2, E)`` int32/int64; edge_weight ``(E,)`` floating or None.
    """

    def __init__(self, edge_index: torch.Tensor, num_nodes: int, edge_weight: torch.Tensor | None = None):
        num_nodes = _validate_num_nodes(num_nodes)
        _validate_edge_index(edge_index, num_nodes)
        _validate_edge_weight(edge_weight, edge_index.shape[1])
        if edge_weight is not None and edge_weight.device != edge_index.device:
            raise ValueError(
                f"edge_weight must be on edge_index's device {edge_index.device}, got {edge_weight.device}")
        self.edge_index = edge_index
        self.num_nodes = num_nodes
        self.edge_weight = edge_weight
        # Everything derived from the edge structure alone (CSR, CSC, the self-looped structure), computed
        # on first use. Shared with every reweighted copy (with_edge_weight), since weights do not enter.
        self._structure_cache: dict = {}

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def source(self) -> torch.Tensor:
        return self.edge_index[0]

    @property
    def destination(self) -> torch.Tensor:
        return self.edge_index[1]

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    def cached(self, key: str, build):
        """``build()``, computed once per edge structure: for values that depend on the edges only."""
        if key not in self._structure_cache:
            self._structure_cache[key] = build()
        return self._structure_cache[key]

    def csr(self) -> Compressed:
        """Rows = destination nodes, ``col`` = sources (cached)."""
        return self.cached("csr", lambda: coo_to_compressed(self.destination, self.source, self.num_nodes))

    def csc(self) -> Compressed:
        """Rows = source nodes, ``col`` = destinations (cached)."""
        return self.cached("csc", lambda: coo_to_compressed(self.source, self.destination, self.num_nodes))

    def with_edge_weight(self, edge_weight: torch.Tensor | None) -> Graph:
        """The same edges with other weights, sharing every cached structure (layouts, self-looped graphs)."""
        graph = Graph(self.edge_index, self.num_nodes, edge_weight)
        graph._structure_cache = self._structure_cache
        return graph

    def to(self, device=None, *, index_dtype: torch.dtype | None = None,
           weight_dtype: torch.dtype | None = None) -> Graph:
        """A copy on ``device`` with the given index dtype (int32/int64) and edge weight dtype."""
        index_dtype = index_dtype or self.edge_index.dtype
        if index_dtype not in _INDEX_DTYPES:
            raise TypeError(f"index_dtype must be int32 or int64, got {index_dtype}")
        weight = self.edge_weight
        if weight is not None:
            weight = weight.to(device=device, dtype=weight_dtype or weight.dtype)
        return Graph(self.edge_index.to(device=device, dtype=index_dtype), self.num_nodes, weight)

    def __repr__(self) -> str:
        weighted = "weighted" if self.edge_weight is not None else "unweighted"
        return f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, {weighted}, {self.edge_index.dtype})"


# --------------------------------------------------------------------------------------------------
# Self-loops and degrees
# --------------------------------------------------------------------------------------------------


def _weights_or_ones(graph: Graph, dtype: torch.dtype | None = None) -> torch.Tensor:
    if graph.edge_weight is not None:
        return graph.edge_weight if dtype is None else graph.edge_weight.to(dtype)
    return torch.ones(graph.num_edges, dtype=dtype or torch.get_default_dtype(), device=graph.device)


def _loop_index(graph: Graph) -> torch.Tensor:
    nodes = torch.arange(graph.num_nodes, dtype=graph.edge_index.dtype, device=graph.device)
    return torch.stack([nodes, nodes])  # (2, N)


def remove_self_loops(graph: Graph) -> Graph:
    """The graph without its edges ``i -> i`` (their weights are dropped too)."""
    keep, structure = graph.cached("without_self_loops", lambda: _without_loops_structure(graph))
    return structure if graph.edge_weight is None else structure.with_edge_weight(graph.edge_weight[keep])


def _without_loops_structure(graph: Graph) -> tuple[torch.Tensor, Graph]:
    keep = graph.source != graph.destination  # (E,)
    return keep, Graph(graph.edge_index[:, keep], graph.num_nodes)


def add_self_loops(graph: Graph, fill_value: float = 1.0) -> Graph:
    """``A + fill_value * I``: one new edge ``i -> i`` per node, appended after the existing edges.

    Existing self-loops are kept, so a node that had one ends with two. The new loops weigh
    ``fill_value``; the result is unweighted only if the input was and ``fill_value == 1``.
    The looped edge structure (and its CSR/CSC) is cached on ``graph``.
    """
    structure = graph.cached("with_self_loops", lambda: Graph(
        torch.cat([graph.edge_index, _loop_index(graph)], dim=1), graph.num_nodes))  # (2, E + N)
    if graph.edge_weight is None and fill_value == 1.0:
        return structure
    weight = _weights_or_ones(graph)
    loops = torch.full((graph.num_nodes,), float(fill_value), dtype=weight.dtype, device=graph.device)
    return structure.with_edge_weight(torch.cat([weight, loops]))


def add_remaining_self_loops(graph: Graph, fill_value: float = 1.0) -> Graph:
    """PyG's rule: every node ends with exactly one self-loop.

    Existing self-loops are removed; then one loop per node is appended, weighted ``fill_value``, or,
    where the node had a self-loop, that loop's weight (the last one in edge order if it had several).
    Non-loop edges keep their order and come first. For a graph without self-loops this is
    ``A + fill_value * I``. The looped edge structure (and its CSR/CSC) is cached on ``graph``.
    """
    keep, loop_edge, structure = graph.cached("remaining_self_loops", lambda: _remaining_loops_structure(graph))
    if graph.edge_weight is None and fill_value == 1.0:
        return structure
    weight = _weights_or_ones(graph)
    fill = torch.full((graph.num_nodes,), float(fill_value), dtype=weight.dtype, device=graph.device)
    if graph.num_edges:
        fill = torch.where(loop_edge >= 0, weight[loop_edge.clamp(min=0)], fill)  # (N,)
    return structure.with_edge_weight(torch.cat([weight[keep], fill]))


def _remaining_loops_structure(graph: Graph) -> tuple[torch.Tensor, torch.Tensor, Graph]:
    """(non-loop mask (E,), the id of each node's last existing loop edge or -1 (N,), the looped graph)."""
    is_loop = graph.source == graph.destination  # (E,)
    loop_edges = is_loop.nonzero().flatten()  # (L,) in edge order
    # The last loop edge of each node wins, chosen by an explicit max over edge ids: a vectorized
    # index_put with duplicate indices (PyG's way) has no defined winner.
    loop_edge = torch.full((graph.num_nodes,), -1, dtype=torch.long, device=graph.device)
    loop_edge.scatter_reduce_(0, graph.source[loop_edges].long(), loop_edges, reduce="amax")
    edge_index = torch.cat([graph.edge_index[:, ~is_loop], _loop_index(graph)], dim=1)  # (2, E' + N)
    return ~is_loop, loop_edge, Graph(edge_index, graph.num_nodes)


def in_degree(graph: Graph, *, weighted: bool = False, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(N,)``: the number (or total weight) of edges arriving at each node."""
    return _degree(graph, graph.destination, weighted, dtype)


def out_degree(graph: Graph, *, weighted: bool = False, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(N,)``: the number (or total weight) of edges leaving each node."""
    return _degree(graph, graph.source, weighted, dtype)


def _degree(graph: Graph, index: torch.Tensor, weighted: bool, dtype) -> torch.Tensor:
    if weighted:
        values = _weights_or_ones(graph, dtype)
        return values.new_zeros(graph.num_nodes).index_add_(0, index.long(), values)
    counts = torch.bincount(index.long(), minlength=graph.num_nodes)  # (N,) int64
    return counts if dtype is None else counts.to(dtype)


# --------------------------------------------------------------------------------------------------
# GCN normalization
# --------------------------------------------------------------------------------------------------


def gcn_norm(graph: Graph, *, add_self_loops: bool = True, fill_value: float = 1.0,
             dtype: torch.dtype | None = None) -> Graph:
    """Symmetric normalization ``D^-1/2 (A + I) D^-1/2`` (Kipf and Welling 2017, eq. 2).

    Matrix form: ``A_hat = D~^-1/2 A~ D~^-1/2`` with ``A~ = A + fill_value * I`` (PyG's "remaining"
    self-loops, see :func:`add_remaining_self_loops`) and ``D~[i, i] = sum_j A~[i, j]``, the weighted
    in-degree of ``i``.

    Edge-wise form: for every edge ``e = (j -> i)`` of ``A~`` with weight ``w_e``,

        w_hat_e = deg^-1/2[i] * w_e * deg^-1/2[j],     deg[i] = sum over edges arriving at i of w_e

    Both ends use the same in-degree vector (as PyG does; for a directed graph the out-degree is never
    used). A node of degree zero gets ``deg^-1/2 = 0`` (not infinity). Weights should be non-negative:
    a negative degree has no real square root.

    Args:
        graph: the graph; its ``edge_weight`` (default: ones) are the entries of ``A``.
        add_self_loops: use ``A + I`` (True, GCN) or ``A`` as given (False).
        fill_value: the weight of the added self-loops (2.0 is the "improved" GCN of PyG).
        dtype: the dtype of the normalized weights when the graph is unweighted (default: torch's default).

    Returns:
        A new :class:`Graph` with the (self-looped) edges and the normalized weights ``w_hat``.
    """
    if add_self_loops:
        graph = add_remaining_self_loops(graph, fill_value)
    weight = _weights_or_ones(graph, dtype if graph.edge_weight is None else None)  # (E,)
    return graph.with_edge_weight(weight * gcn_edge_scale(graph, weight))


def gcn_edge_scale(graph: Graph, weight: torch.Tensor) -> torch.Tensor:
    """``(E,)``: ``deg^-1/2[i] * deg^-1/2[j]`` per edge ``j -> i``, with ``deg`` the in-degree under ``weight``."""
    deg = weight.new_zeros(graph.num_nodes).index_add_(0, graph.destination.long(), weight)  # (N,)
    deg_inv_sqrt = deg.pow(-0.5)
    deg_inv_sqrt = deg_inv_sqrt.masked_fill(deg_inv_sqrt == float("inf"), 0.0)  # isolated: 0, not inf
    return deg_inv_sqrt[graph.destination.long()] * deg_inv_sqrt[graph.source.long()]  # (E,)
