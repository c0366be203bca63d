"""Graph generators for tests and benchmarks, deterministic from a seed.

Random families:

* :func:`erdos_renyi`: directed G(n, p) (Erdos and Renyi 1959; Gilbert 1959) without self-loops or
  duplicate edges, or G(n, m) with an exact edge count.
* :func:`power_law`: Chung-Lu style graph (Chung and Lu 2002) whose expected degrees follow a power law:
  both endpoints of each edge are drawn with probability proportional to a weight ``w_i ~ i^(-1/(gamma-1))``,
  so a few hubs collect most edges (the workload that unbalances a one-row-per-program kernel).
* :func:`grid_2d`: the 4-neighbour lattice, edges in both directions (regular, low degree).

Awkward cases (the inputs where kernels go wrong): :func:`with_isolated_nodes` (nodes with no edge at
all), :func:`with_self_loops`, :func:`with_duplicate_edges`, :func:`no_edges`, :func:`single_node`.

The registry :data:`GENERATORS` maps a name to a builder ``build(num_nodes, *, seed, index_dtype)`` so
tests and benchmarks can parametrize over every family with ``generator_names()``. Every builder is a
pure function of its arguments: the same seed gives the same edge list, in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from reference.graph import Graph

__all__ = [
    "erdos_renyi",
    "power_law",
    "grid_2d",
    "with_isolated_nodes",
    "with_self_loops",
    "with_duplicate_edges",
    "no_edges",
    "single_node",
    "GENERATORS",
    "AWKWARD",
    "generator_names",
    "make_graph",
]


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _check_num_nodes(num_nodes, minimum: int = 0) -> None:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < minimum:
        raise ValueError(f"num_nodes must be an int >= {minimum}, got {num_nodes!r}")


def _distinct_non_loop_pairs(num_nodes: int, num_edges: int, generator: torch.Generator) -> torch.Tensor:
    """``(2, m)``: ``m`` distinct ordered pairs ``j != i``, uniformly among all of them, in random order.

    Pairs are coded as keys in ``[0, n (n - 1))``; random keys are drawn, deduplicated and topped up
    until there are enough (memory O(m), never O(n^2)).
    """
    total = num_nodes * (num_nodes - 1)
    if num_edges > total:
        raise ValueError(f"num_edges must be at most num_nodes * (num_nodes - 1) = {total}, got {num_edges}")
    keys = torch.empty(0, dtype=torch.int64)
    while keys.numel() < num_edges:
        draw = torch.randint(0, total, (int(1.1 * (num_edges - keys.numel())) + 16,), generator=generator)
        keys = torch.unique(torch.cat([keys, draw]))  # sorted, distinct
    keys = keys[torch.randperm(keys.numel(), generator=generator)[:num_edges]]  # uniform subset, random order
    source = keys // (num_nodes - 1)
    rest = keys % (num_nodes - 1)
    destination = rest + (rest >= source).long()  # skip the diagonal
    return torch.stack([source, destination])  # (2, m)


def erdos_renyi(num_nodes: int, edge_prob: float | None = None, *, num_edges: int | None = None, seed: int,
                index_dtype: torch.dtype = torch.int64) -> Graph:
    """Directed Erdos-Renyi graph: each ordered pair ``j != i`` is an edge with probability ``edge_prob``
    (G(n, p)), or exactly ``num_edges`` distinct pairs chosen uniformly (G(n, m)). No self-loops, no
    duplicates. Give exactly one of ``edge_prob`` and ``num_edges``.
    """
    _check_num_nodes(num_nodes)
    generator = _generator(seed)
    if (edge_prob is None) == (num_edges is None):
        raise ValueError("give exactly one of edge_prob and num_edges")
    total = num_nodes * (num_nodes - 1)
    if edge_prob is not None:
        if not 0.0 <= edge_prob <= 1.0:
            raise ValueError(f"edge_prob must be in [0, 1], got {edge_prob}")
        # G(n, p) conditioned on its edge count is uniform over the m-subsets: draw m, then the subset.
        num_edges = int(torch.binomial(torch.tensor(float(total)), torch.tensor(float(edge_prob)),
                                       generator=generator)) if total else 0
    elif num_edges < 0:
        raise ValueError(f"num_edges must be >= 0, got {num_edges}")
    pairs = _distinct_non_loop_pairs(num_nodes, num_edges, generator) if num_edges else torch.empty(2, 0)
    return Graph(pairs.to(index_dtype), num_nodes)


def power_law(num_nodes: int, avg_degree: float = 4.0, *, exponent: float = 2.5, seed: int,
              index_dtype: torch.dtype = torch.int64) -> Graph:
    """Chung-Lu style graph with a power-law degree distribution of the given ``exponent`` (gamma > 2).

    Node ``i`` gets weight ``w_i = (i + 1)^(-1 / (gamma - 1))``; ``avg_degree * n`` edges are drawn with
    source and destination independently proportional to ``w``, so node degrees are about proportional
    to ``w`` and follow ``P(k) ~ k^-gamma``. Self-loops and duplicate draws are then removed, which thins
    the hubs slightly. Node ids are shuffled so the hubs are not all at the front.
    """
    _check_num_nodes(num_nodes)
    if exponent <= 2.0:
        raise ValueError(f"exponent must be > 2 (finite mean degree), got {exponent}")
    if avg_degree < 0:
        raise ValueError(f"avg_degree must be >= 0, got {avg_degree}")
    generator = _generator(seed)
    draws = int(round(avg_degree * num_nodes))
    if num_nodes < 2 or draws == 0:
        return Graph(torch.empty(2, 0, dtype=index_dtype), num_nodes)
    weight = torch.arange(1, num_nodes + 1, dtype=torch.float64).pow(-1.0 / (exponent - 1.0))  # (N,)
    shuffle = torch.randperm(num_nodes, generator=generator)
    source = shuffle[torch.multinomial(weight, draws, replacement=True, generator=generator)]
    destination = shuffle[torch.multinomial(weight, draws, replacement=True, generator=generator)]
    keys = source * num_nodes + destination
    keys = keys[source != destination]
    unique, first = _first_occurrences(keys)
    keys = unique[torch.argsort(first)]  # drop duplicate draws, keep the order of first appearance
    return Graph(torch.stack([keys // num_nodes, keys % num_nodes]).to(index_dtype), num_nodes)


def _first_occurrences(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct keys and the position where each first appears."""
    unique, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((unique.numel(),), keys.numel(), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(keys.numel()), reduce="amin")
    return unique, first


def grid_2d(rows: int, cols: int, *, index_dtype: torch.dtype = torch.int64) -> Graph:
    """The ``rows x cols`` 4-neighbour lattice; node ``r * cols + c``; every edge in both directions."""
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got {rows} x {cols}")
    node = torch.arange(rows * cols).view(rows, cols)
    right = torch.stack([node[:, :-1].flatten(), node[:, 1:].flatten()])  # (2, rows * (cols - 1))
    down = torch.stack([node[:-1, :].flatten(), node[1:, :].flatten()])  # (2, (rows - 1) * cols)
    one_way = torch.cat([right, down], dim=1)
    edge_index = torch.cat([one_way, one_way.flip(0)], dim=1)  # (2, E)
    return Graph(edge_index.to(index_dtype), rows * cols)


# --------------------------------------------------------------------------------------------------
# Awkward cases
# --------------------------------------------------------------------------------------------------


def _random_subset(size: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """``round(fraction * size)`` distinct ids in ``[0, size)``, at least one when ``size > 0``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = min(size, max(1, round(fraction * size))) if size else 0
    return torch.randperm(size, generator=generator)[:count]


def with_isolated_nodes(graph: Graph, fraction: float = 0.25, *, seed: int) -> Graph:
    """Remove every edge touching ``round(fraction * N)`` random nodes (at least one): they get no in- or
    out-edges."""
    isolated = torch.zeros(graph.num_nodes, dtype=torch.bool)
    isolated[_random_subset(graph.num_nodes, fraction, _generator(seed))] = True  # (N,)
    touches = isolated[graph.source.long()] | isolated[graph.destination.long()]  # (E,)
    weight = graph.edge_weight[~touches] if graph.edge_weight is not None else None
    return Graph(graph.edge_index[:, ~touches], graph.num_nodes, weight)


def with_self_loops(graph: Graph, fraction: float = 0.3, *, seed: int) -> Graph:
    """Add one self-loop ``i -> i`` to ``round(fraction * N)`` random nodes (at least one), shuffled in among
    the edges."""
    generator = _generator(seed)
    nodes = _random_subset(graph.num_nodes, fraction, generator)
    loops = torch.stack([nodes, nodes]).to(graph.edge_index.dtype)  # (2, L)
    edge_index = torch.cat([graph.edge_index, loops], dim=1)
    order = torch.randperm(edge_index.shape[1], generator=generator)
    return Graph(edge_index[:, order], graph.num_nodes)


def with_duplicate_edges(graph: Graph, fraction: float = 0.3, *, seed: int) -> Graph:
    """Copy ``round(fraction * E)`` random edges (at least one) once more, and the first half of those a
    third time; the copies are shuffled in among the edges."""
    generator = _generator(seed)
    copied = _random_subset(graph.num_edges, fraction, generator)
    extra = torch.cat([copied, copied[: copied.numel() // 2]])  # edge ids to copy
    edge_index = torch.cat([graph.edge_index, graph.edge_index[:, extra]], dim=1)
    order = torch.randperm(edge_index.shape[1], generator=generator)
    return Graph(edge_index[:, order], graph.num_nodes)


def no_edges(num_nodes: int, *, index_dtype: torch.dtype = torch.int64) -> Graph:
    """``num_nodes`` nodes and no edge at all: every aggregation result is zero."""
    _check_num_nodes(num_nodes)
    return Graph(torch.empty(2, 0, dtype=index_dtype), num_nodes)


def single_node(*, index_dtype: torch.dtype = torch.int64) -> Graph:
    """One node, no edges."""
    return no_edges(1, index_dtype=index_dtype)


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------

Builder = Callable[..., Graph]  # build(num_nodes, *, seed, index_dtype) -> Graph


def _sparse_er(num_nodes: int, seed: int, index_dtype: torch.dtype) -> Graph:
    # average in-degree about 4 (capped by the complete graph for tiny n)
    return erdos_renyi(num_nodes, min(1.0, 4.0 / max(num_nodes - 1, 1)), seed=seed, index_dtype=index_dtype)


def _grid(num_nodes: int, seed: int, index_dtype: torch.dtype) -> Graph:
    rows = max(1, math.isqrt(num_nodes))
    return grid_2d(rows, max(1, num_nodes // rows), index_dtype=index_dtype)  # rows * cols <= num_nodes


GENERATORS: dict[str, Builder] = {
    "erdos_renyi": lambda n, *, seed, index_dtype=torch.int64: _sparse_er(n, seed, index_dtype),
    "power_law": lambda n, *, seed, index_dtype=torch.int64: power_law(n, 4.0, seed=seed, index_dtype=index_dtype),
    "grid_2d": lambda n, *, seed, index_dtype=torch.int64: _grid(n, seed, index_dtype),
    "isolated_nodes": lambda n, *, seed, index_dtype=torch.int64: with_isolated_nodes(
        _sparse_er(n, seed, index_dtype), seed=seed + 1),
    "self_loops": lambda n, *, seed, index_dtype=torch.int64: with_self_loops(
        _sparse_er(n, seed, index_dtype), seed=seed + 1),
    "duplicate_edges": lambda n, *, seed, index_dtype=torch.int64: with_duplicate_edges(
        _sparse_er(n, seed, index_dtype), seed=seed + 1),
    "no_edges": lambda n, *, seed, index_dtype=torch.int64: no_edges(n, index_dtype=index_dtype),
    "single_node": lambda n, *, seed, index_dtype=torch.int64: single_node(index_dtype=index_dtype),
}
AWKWARD = ("isolated_nodes", "self_loops", "duplicate_edges", "no_edges", "single_node")


def generator_names() -> list[str]:
    """Every registered family, in registry order (for ``pytest.mark.parametrize``)."""
    return list(GENERATORS)


def make_graph(name: str, num_nodes: int, *, seed: int, index_dtype: torch.dtype = torch.int64) -> Graph:
    """Build the registered family ``name`` with about ``num_nodes`` nodes (``grid_2d`` rounds down to a
    rectangle; ``single_node`` always has one)."""
    if name not in GENERATORS:
        raise ValueError(f"name must be one of {generator_names()}, got {name!r}")
    return GENERATORS[name](num_nodes, seed=seed, index_dtype=index_dtype)
