"""Shared inputs for the graph-kernel correctness tests (test_spmm.py, test_gat.py).

* :func:`pairwise` builds a small covering array: every pair of values of any two factors appears in
  at least one case (the all-pairs strategy), instead of the full product, so the interpreter tier
  stays fast while each factor still meets every other one.
* :func:`layouts` turns a :class:`reference.graph.Graph` into the kernels' ``Layout`` pair.
* :func:`random_graph` draws a small arbitrary edge list (empty rows, duplicates, self-loops) for
  the hypothesis tests.
"""

from __future__ import annotations

import itertools

import torch

from kernels.spmm import Layout
from reference.graph import Graph


def pairwise(factors: dict[str, list]) -> list[dict]:
    """A deterministic all-pairs covering array of ``factors`` (in-parameter-order greedy growth).

    Rows start as the product of the first two factors; each further factor is added column by column,
    giving each row the value that covers the most still-missing pairs, and rows are appended for pairs
    left over (the other entries of such a row take each factor's first value).
    """
    names = list(factors)
    rows = [list(pair) for pair in itertools.product(factors[names[0]], factors[names[1]])]
    for k in range(2, len(names)):
        values = factors[names[k]]
        missing = {(i, a, b) for i in range(k) for a in range(len(factors[names[i]])) for b in range(len(values))}
        index = [{v: n for n, v in enumerate(factors[name])} for name in names[:k]]

        def covered(row, b, index=index, k=k):
            return {(i, index[i][row[i]], b) for i in range(k)}

        for row in rows:
            best = max(range(len(values)), key=lambda b, row=row: (len(covered(row, b) & missing), -b))
            row.append(values[best])
            missing -= covered(row, best)
        for i, a, b in sorted(missing):
            row = [factors[name][0] for name in names[:k]] + [values[b]]
            row[i] = factors[names[i]][a]
            rows.append(row)
    return [dict(zip(names, row, strict=True)) for row in rows]


def case_id(case: dict) -> str:
    def short(value):
        if isinstance(value, torch.dtype):
            return str(value).removeprefix("torch.")
        return str(value)

    return "-".join(short(v) for v in case.values())


def layouts(graph: Graph) -> tuple[Layout, Layout]:
    """``(csr, csc)`` of a graph as the kernels read them."""
    csr, csc = graph.csr(), graph.csc()
    return Layout(csr.rowptr, csr.col, csr.perm), Layout(csc.rowptr, csc.col, csc.perm)


def random_graph(num_nodes: int, num_edges: int, seed: int, index_dtype: torch.dtype = torch.int64) -> Graph:
    """Uniform random (source, destination) pairs: duplicates, self-loops and empty rows all occur."""
    generator = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=generator)
    return Graph(edge_index.to(index_dtype), num_nodes)


# --------------------------------------------------------------------------------------------------
# Module level: reference layers with weights copied from their PyG oracle
# --------------------------------------------------------------------------------------------------


def gcn_pair(seed: int, in_channels: int, out_channels: int, **options):
    """``(ours, theirs)``: reference.gnn.GCNConv and torch_geometric's GCNConv, float64, same parameters."""
    import torch_geometric.nn as pyg_nn

    from fusebench.inputs import random_tensor
    from reference.gnn import GCNConv

    torch.manual_seed(seed % 2**32)
    theirs = pyg_nn.GCNConv(in_channels, out_channels, **options).double()
    ours = GCNConv(in_channels, out_channels, **options).double()
    with torch.no_grad():
        theirs.bias.copy_(random_tensor((out_channels,), seed=seed + 3, dtype=torch.float64))  # PyG starts at 0
        ours.lin.weight.copy_(theirs.lin.weight)
        ours.bias.copy_(theirs.bias)
    return ours, theirs


def gat_pair(seed: int, in_channels: int, out_channels: int, heads: int, **options):
    """``(ours, theirs)``: reference.gnn.GATConv and torch_geometric's GATConv (dropout 0), float64."""
    import torch_geometric.nn as pyg_nn

    from fusebench.inputs import random_tensor
    from reference.gnn import GATConv

    torch.manual_seed(seed % 2**32)
    theirs = pyg_nn.GATConv(in_channels, out_channels, heads, dropout=0.0, **options).double()
    ours = GATConv(in_channels, out_channels, heads, **options).double()
    with torch.no_grad():
        theirs.bias.copy_(random_tensor(theirs.bias.shape, seed=seed + 3, dtype=torch.float64))  # PyG starts at 0
        ours.lin.weight.copy_(theirs.lin.weight)
        ours.att_src.copy_(theirs.att_src[0])  # (1, H, C) -> (H, C)
        ours.att_dst.copy_(theirs.att_dst[0])
        ours.bias.copy_(theirs.bias)
    return ours, theirs


def layer_in(layer, dtype: torch.dtype, backend: str):
    """A copy of ``layer`` in ``dtype`` using aggregation ``backend`` (the original is left untouched)."""
    import copy

    clone = copy.deepcopy(layer).to(dtype)
    clone.backend = backend
    return clone


def tie_free_columns(x: torch.Tensor) -> torch.Tensor:
    """``x`` with each column's values made distinct even after rounding to bfloat16, order kept.

    ``max`` has a unique arg-max only without ties, and its gradient is only unique then (the reference
    splits a tie evenly, the kernel gives it to the first edge: both are valid subgradients). bfloat16
    has 256 values per binade, so random low-precision features tie often. Value of rank ``r`` in a column
    of ``n``: ``4 (r + 0.5 + 0.3 tanh(x)) / n - 2``, in (-2, 2), at least ``1.6 / n`` apart, which stays
    above bfloat16's spacing (2^-6 near 2) for ``n <= 100``.
    """
    if x.shape[0] > 100:
        raise ValueError(f"tie_free_columns keeps bfloat16 values apart for at most 100 rows, got {x.shape[0]}")
    n = x.shape[0]
    ranks = x.argsort(0).argsort(0).to(torch.float64)  # (N, F) rank of each value within its column
    return 4 * (ranks + 0.5 + 0.3 * torch.tanh(x.double())) / max(n, 1) - 2


# --------------------------------------------------------------------------------------------------
# The fuzz tier's graphs: the awkward corners
# --------------------------------------------------------------------------------------------------

FUZZ_SIZES = (1, 2, 3, 5, 7, 11, 13)  # one node, and primes: never a multiple of a tile
GRAPH_SHAPES = ("random", "hub", "isolated")


def awkward_graph(num_nodes: int, shape: str, num_edges: int, seed: int, index_dtype: torch.dtype) -> Graph:
    """``random``: uniform pairs (duplicates, self-loops, empty rows); ``hub``: every node twice into node 0
    (one long row, split into segments at small edges_per_program) plus random edges; ``isolated``: edges
    only among the first half of the nodes, so the rest neither send nor receive."""
    generator = torch.Generator().manual_seed(seed)
    if shape == "hub":
        sources = torch.arange(num_nodes).repeat(2)
        star = torch.stack([sources, torch.zeros_like(sources)])
        edge_index = torch.cat([star, torch.randint(0, num_nodes, (2, num_edges), generator=generator)], dim=1)
    elif shape == "isolated":
        edge_index = torch.randint(0, max(1, num_nodes // 2), (2, num_edges), generator=generator)
    elif shape == "random":
        edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=generator)
    else:
        raise ValueError(f"shape must be one of {GRAPH_SHAPES}, got {shape!r}")
    return Graph(edge_index.to(index_dtype), num_nodes)
