"""Graph embedding (seed section 26): random-walk node embeddings and graph readout.

Node embeddings, in the order the pieces are used:

1. :func:`random_walks`: DeepWalk's uniform walks (Perozzi et al. 2014) or node2vec's second-order
   biased walks (Grover and Leskovec 2016, section 3.2.2). Having arrived at ``v`` from ``t``, the walk
   moves to a neighbour ``x`` of ``v`` with unnormalized probability

       1/p  if x == t          (return)
       1    if t -> x is an edge   (stay close to t)
       1/q  otherwise          (move outward)

   ``p = q = 1`` is DeepWalk. Walks follow edges in their direction (source -> destination); a node
   with no outgoing edge repeats itself until the walk ends (torch_cluster's convention).
2. :func:`context_windows`: every window of ``context_size`` consecutive walk nodes; the first is
   the centre, the rest its context (skip-gram, Mikolov et al. 2013). :func:`negative_windows` pairs
   each centre with uniformly drawn nodes instead.
3. :func:`skipgram_loss`: negative sampling,

       L = - mean over (u, c) positive  of log sigmoid(z_u . z_c)
           - mean over (u, n) negative  of log sigmoid(-z_u . z_n)

   with one embedding table ``z`` for centres and contexts (node2vec's single mapping ``f``; PyG's
   ``Node2Vec`` does the same).
4. :class:`Node2Vec`: the embedding table, the sampler and a training loop.

Graph readout: :func:`readout` pools node features into one vector per graph (sum, mean or max;
Xu et al. 2019 discuss which is more expressive), ``h_G = REDUCE over nodes i of G of x_i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reference.backends import Backends
from reference.gnn import segment_reduce, validate_reduce
from reference.graph import Graph

__all__ = [
    "random_walks",
    "context_windows",
    "negative_windows",
    "skipgram_loss",
    "Node2VecConfig",
    "Node2Vec",
    "readout",
    "register_readout_backend",
    "READOUT_BACKENDS",
]


# --------------------------------------------------------------------------------------------------
# Random walks
# --------------------------------------------------------------------------------------------------


def _edge_keys(graph: Graph) -> torch.Tensor:
    """Sorted ``source * N + destination`` of every edge: membership tests for ``t -> x``."""
    keys = graph.source.long() * graph.num_nodes + graph.destination.long()
    return torch.sort(keys).values


def _has_edge(sorted_keys: torch.Tensor, source: torch.Tensor, destination: torch.Tensor, num_nodes: int):
    keys = source * num_nodes + destination
    where = torch.searchsorted(sorted_keys, keys).clamp(max=max(sorted_keys.numel() - 1, 0))
    return (sorted_keys.numel() > 0) & (sorted_keys[where] == keys)


def random_walks(graph: Graph, starts: torch.Tensor, walk_length: int, *, p: float = 1.0, q: float = 1.0,
                 seed: int) -> torch.Tensor:
    """Walks of ``walk_length`` nodes from each of ``starts`` (DeepWalk for ``p = q = 1``, else node2vec).

    The biased step is drawn by rejection sampling, as in node2vec's reference code and torch_cluster:
    propose a uniform out-neighbour ``x``, accept with probability ``weight(x) / max(1/p, 1, 1/q)``.
    Memory O(E + walks * walk_length).

    Args:
        graph: the edges walked, in their direction.
        starts: ``(W,)`` start nodes (repeat a node to walk from it several times).
        walk_length: nodes per walk, start included (>= 1).
        p / q: node2vec's return and in-out parameters (> 0).
        seed: the walks are a pure function of the seed.

    Shapes:
        starts ``(W,)`` -> ``(W, walk_length)`` int64.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a reference.graph.Graph, got {type(graph).__name__}")
    if not isinstance(walk_length, int) or walk_length < 1:
        raise ValueError(f"walk_length must be an int >= 1, got {walk_length!r}")
    for name, value in (("p", p), ("q", q)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if not isinstance(starts, torch.Tensor) or starts.dim() != 1 or starts.dtype not in (torch.int32, torch.int64):
        raise TypeError("starts must be a 1-D int32 or int64 tensor of node ids")
    if starts.numel() and (int(starts.min()) < 0 or int(starts.max()) >= graph.num_nodes):
        raise ValueError(f"starts must hold node ids in [0, num_nodes={graph.num_nodes})")
    generator = torch.Generator().manual_seed(seed)
    out_edges = graph.csc()  # rows = sources: the out-neighbours of each node
    rowptr, neighbours = out_edges.rowptr.long(), out_edges.col.long()
    biased = p != 1.0 or q != 1.0
    keys = _edge_keys(graph) if biased else None
    bound = max(1.0 / p, 1.0, 1.0 / q)

    current = starts.long()
    walk, previous = [current], None
    for _ in range(walk_length - 1):
        degree = rowptr[current + 1] - rowptr[current]  # (W,)
        nxt = current.clone()  # dead ends stay where they are
        pending = degree > 0
        while pending.any():
            rows = pending.nonzero().flatten()
            offset = (torch.rand(rows.numel(), generator=generator, dtype=torch.float64) * degree[rows]).long()
            proposal = neighbours[rowptr[current[rows]] + offset.clamp(max=degree[rows] - 1)]
            if biased and previous is not None:
                back = previous[rows]
                weight = torch.where(proposal == back, 1.0 / p,
                                     torch.where(_has_edge(keys, back, proposal, graph.num_nodes), 1.0, 1.0 / q))
                accept = torch.rand(rows.numel(), generator=generator, dtype=torch.float64) * bound < weight
            else:
                accept = torch.ones_like(proposal, dtype=torch.bool)
            nxt[rows[accept]] = proposal[accept]
            pending[rows[accept]] = False
        previous, current = current, nxt
        walk.append(current)
    return torch.stack(walk, dim=1)  # (W, walk_length)


# --------------------------------------------------------------------------------------------------
# Skip-gram with negative sampling
# --------------------------------------------------------------------------------------------------


def context_windows(walks: torch.Tensor, context_size: int) -> torch.Tensor:
    """Every run of ``context_size`` consecutive nodes of every walk: ``(W, L) -> (W * (L - K + 1), K)``,
    grouped by offset (all walks' first windows, then all second windows, ...)."""
    if not 2 <= context_size <= walks.shape[1]:
        raise ValueError(f"context_size must be in [2, walk_length={walks.shape[1]}], got {context_size}")
    windows = walks.unfold(1, context_size, 1)  # (W, L - K + 1, K)
    return windows.transpose(0, 1).reshape(-1, context_size)


def negative_windows(centres: torch.Tensor, walk_length: int, context_size: int, num_nodes: int, *,
                     seed: int) -> torch.Tensor:
    """Windows whose first node is a centre and whose others are drawn uniformly from all nodes.

    Each centre gets a random "walk" of ``walk_length - 1`` uniform nodes, cut into windows like
    :func:`context_windows` (PyG's scheme), so a centre meets ``(walk_length - context_size + 1) *
    (context_size - 1)`` negatives. Uniform rather than word2vec's unigram^0.75: every node is equally
    likely to be a negative.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(num_nodes, (centres.numel(), walk_length - 1), generator=generator)
    return context_windows(torch.cat([centres.long()[:, None], noise], dim=1), context_size)


def skipgram_loss(embedding: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Negative-sampling skip-gram loss over windows (see the module docstring).

    Args:
        embedding: ``(N, D)`` node embeddings ``z``.
        positive: ``(B, K)`` windows, centre first, true context after.
        negative: ``(B', K)`` windows, centre first, noise nodes after.

    Returns:
        A scalar: mean ``-log sigmoid(z_u . z_c)`` over positive pairs plus mean ``-log sigmoid(-z_u . z_n)``
        over negative pairs.
    """

    def scores(windows):
        centre = F.embedding(windows[:, 0], embedding)  # (B, D)
        context = F.embedding(windows[:, 1:], embedding)  # (B, K - 1, D)
        return (centre[:, None, :] * context).sum(dim=-1)  # (B, K - 1)

    return -F.logsigmoid(scores(positive)).mean() - F.logsigmoid(-scores(negative)).mean()


@dataclass
class Node2VecConfig:
    """node2vec's knobs (Grover and Leskovec 2016; their defaults are d=128, l=80, k=10, r=10)."""

    embedding_dim: int = 16
    walk_length: int = 10  # nodes per walk (l)
    context_size: int = 5  # window length: one centre and context_size - 1 neighbours (k + 1)
    walks_per_node: int = 10  # r
    num_negative: int = 1  # negative windows per positive window
    p: float = 1.0  # return parameter
    q: float = 1.0  # in-out parameter (p = q = 1: DeepWalk)


class Node2Vec(nn.Module):
    """node2vec / DeepWalk node embeddings: biased random walks + skip-gram with negative sampling.

    Shapes:
        forward(nodes ``(B,)`` or None) -> ``(B, D)`` or the whole table ``(N, D)``.
    """

    def __init__(self, graph: Graph, config: Node2VecConfig | None = None):
        super().__init__()
        self.graph = graph
        self.config = config or Node2VecConfig()
        if not 2 <= self.config.context_size <= self.config.walk_length:
            raise ValueError(f"context_size must be in [2, walk_length={self.config.walk_length}], "
                             f"got {self.config.context_size}")
        self.embedding = nn.Embedding(graph.num_nodes, self.config.embedding_dim)

    def forward(self, nodes: torch.Tensor | None = None) -> torch.Tensor:
        return self.embedding.weight if nodes is None else self.embedding(nodes)

    def sample(self, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive and negative windows for one pass over every node."""
        c = self.config
        starts = torch.arange(self.graph.num_nodes).repeat(c.walks_per_node)  # (N * r,)
        walks = random_walks(self.graph, starts, c.walk_length, p=c.p, q=c.q, seed=seed)
        positive = context_windows(walks, c.context_size)
        negative = negative_windows(starts.repeat(c.num_negative), c.walk_length, c.context_size,
                                    self.graph.num_nodes, seed=seed + 1)
        return positive, negative

    def loss(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return skipgram_loss(self.embedding.weight, positive, negative)

    def fit(self, *, epochs: int, lr: float = 0.05, seed: int) -> list[float]:
        """Train with Adam on freshly sampled windows each epoch; returns the loss per epoch."""
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        losses = []
        for epoch in range(epochs):
            positive, negative = self.sample(seed=seed + 2 * epoch)
            optimizer.zero_grad()
            loss = self.loss(positive, negative)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        return losses


# --------------------------------------------------------------------------------------------------
# Readout: node features -> one vector per graph
# --------------------------------------------------------------------------------------------------


READOUT_BACKENDS = Backends("readout")  # "triton" is declared in pyproject.toml (see reference/backends.py)


def register_readout_backend(name: str, fn) -> None:
    """Make ``fn`` available as ``readout(..., backend=name)``.

    ``fn(x, batch, *, num_graphs, reduce)`` receives validated arguments: ``x`` ``(N, F)``, ``batch`` ``(N,)``
    graph ids in ``[0, num_graphs)``; it returns ``(num_graphs, F)`` (a graph without nodes gets 0).
    """
    READOUT_BACKENDS.register(name, fn)


def readout(x: torch.Tensor, batch: torch.Tensor | None = None, *, reduce: str = "sum",
            num_graphs: int | None = None, backend: str = "reference") -> torch.Tensor:
    """Pool node features into graph vectors: ``h_G = REDUCE over nodes i with batch[i] = G of x_i``.

    Matrix form for ``sum``: ``H = B^T X`` with ``B[i, G] = 1`` when node ``i`` belongs to graph ``G``;
    ``mean`` divides by the node count, ``max`` is element-wise. A graph with no nodes gets 0.

    Args:
        x: node features ``(N, F)``.
        batch: ``(N,)`` graph id of each node (PyG's ``batch`` vector); None: all nodes form one graph.
        reduce: ``"sum"``, ``"mean"`` or ``"max"``.
        num_graphs: the number of graphs ``G`` (default ``batch.max() + 1``).
        backend: ``"reference"`` (a segment reduction here) or a registered readout backend such as
            ``"triton"`` (kernels/spmm.py: a rectangular CSR aggregation, rows = graphs, columns = nodes).

    Shapes:
        x ``(N, F)`` -> ``(G, F)``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 2:
        raise ValueError(f"x must be a floating-point tensor of shape (N, F), got {getattr(x, 'shape', x)!r}")
    validate_reduce(reduce)
    if batch is None:
        batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        num_graphs = 1 if num_graphs is None else num_graphs
    if (not isinstance(batch, torch.Tensor) or batch.dtype not in (torch.int32, torch.int64) or batch.dim() != 1
            or batch.numel() != x.shape[0]):
        raise ValueError(f"batch must be a 1-D int tensor with one graph id per node ({x.shape[0]})")
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    if batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= num_graphs):
        raise ValueError(f"batch must hold graph ids in [0, num_graphs={num_graphs})")
    return READOUT_BACKENDS.get(backend)(x, batch, num_graphs=num_graphs, reduce=reduce)  # (G, F)


def _reference_readout(x: torch.Tensor, batch: torch.Tensor, *, num_graphs: int, reduce: str) -> torch.Tensor:
    return segment_reduce(x, batch, num_graphs, reduce)  # (G, F)


register_readout_backend("reference", _reference_readout)
