"""Shared inputs for the graph-kernel correctness tests (test_spmm.py, test_gat.py).

* :func:`case_id` names a row of a pairwise case table (``fusebench.pairwise``).
* :func:`random_graph` draws a small arbitrary edge list (empty rows, duplicates, self-loops) for
  the hypothesis tests.
"""

from __future__ import annotations

import torch

from reference.graph import Graph, gcn_edge_scale


def case_id(case: dict) -> str:
    def short(value):
        if isinstance(value, torch.dtype):
            return str(value).removeprefix("torch.")
        return str(value)

    return "-".join(short(v) for v in case.values())


def random_graph(num_nodes: int, num_edges: int, seed: int, index_dtype: torch.dtype = torch.int64) -> Graph:
    """Uniform random (source, destination) pairs: duplicates, self-loops and empty rows all occur."""
    generator = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=generator)
    return Graph(edge_index.to(index_dtype), num_nodes)


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


def maxima_are_unique(graph: Graph, x: torch.Tensor, weight: torch.Tensor | None, normalize: str | None) -> bool:
    """Whether each row's ``max`` over its messages ``c_e * x[j]`` (``c_e`` the edge weight, times the GCN scale with
    ``normalize="gcn"``) has one winner in every column, by a margin no float32 product can cross.

    Distinct features are not enough: GCN scales ``deg^-1/2[j]`` make two messages tie exactly whenever two
    sources' degrees differ by a square factor and their features by its root (degrees 1 and 4, features 2a and a;
    found by the pairwise tier). The reference splits a tie, the kernel gives it to the first edge: both valid,
    neither gold's. Near ties count too: the kernel forms messages in float32 (relative error ~2e-7), so two messages
    within 1e-5 of each other may swap. A tie that changes no gradient is allowed: between edges of zero scale, or
    (unweighted) between duplicate edges of one source."""
    coefficient = weight.double() if weight is not None else torch.ones(graph.num_edges, dtype=torch.float64)
    if normalize == "gcn":
        coefficient = coefficient * gcn_edge_scale(graph, coefficient)
    source, destination = graph.source.long(), graph.destination.long()
    messages = coefficient[:, None] * x.double()[source]  # (E, F)
    for row in destination.unique().tolist():
        edges = (destination == row).nonzero().flatten()
        row_messages = messages[edges]  # (edges into row, F)
        top = row_messages.max(dim=0).values
        near = (row_messages >= top - 1e-5 * top.abs()) & (coefficient[edges] != 0)[:, None]  # (edges, F)
        for column in range(messages.shape[1]):
            winners = edges[near[:, column]]
            if len(winners) > 1 and (weight is not None or len(source[winners].unique()) > 1):
                return False
    return True


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
