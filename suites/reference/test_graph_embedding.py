"""reference/graph_embedding.py: walks, the skip-gram loss, node2vec training, and graph readout.

* random walks: every step follows an edge (on every generator), and node2vec's p/q bias matches the
  transition probabilities of the paper on graphs where they have a closed form;
* skip-gram loss: PyG's ``Node2Vec.loss`` on the same windows and embedding (value and gradient);
* training: node2vec embeddings of two cliques joined by one edge separate the cliques;
* readout: ``torch_geometric.nn.global_add_pool`` / ``global_mean_pool`` / ``global_max_pool``.
"""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import torch_geometric.nn as pyg_nn

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.graph import Graph, out_degree
from reference.graph_embedding import (
    Node2Vec,
    Node2VecConfig,
    context_windows,
    negative_windows,
    random_walks,
    readout,
    skipgram_loss,
)
from reference.graph_generators import generator_names, grid_2d, make_graph

DTYPES = [torch.float64, torch.float32]


def _undirected(pairs) -> Graph:
    edges = torch.tensor(pairs).T
    return Graph(torch.cat([edges, edges.flip(0)], dim=1), int(edges.max()) + 1)


def _complete(n: int) -> Graph:
    return _undirected([(i, j) for i in range(n) for j in range(i + 1, n)])


def _cycle(n: int) -> Graph:
    return _undirected([(i, (i + 1) % n) for i in range(n)])


def _two_cliques(k: int) -> Graph:
    """Two complete graphs on k nodes each, joined by the single undirected edge (k - 1, k)."""
    inside = [(i, j) for i in range(k) for j in range(i + 1, k)]
    return _undirected(inside + [(i + k, j + k) for i, j in inside] + [(k - 1, k)])


# --------------------------------------------------------------------------------------------------
# Random walks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pq", [(1.0, 1.0), (0.25, 4.0), (4.0, 0.25)], ids=["deepwalk", "inward", "outward"])
@pytest.mark.parametrize("name", generator_names())
def test_walks_only_follow_edges(seed, name, pq):
    graph = make_graph(name, 41, seed=seed)
    starts = torch.arange(graph.num_nodes).repeat(3)
    walks = random_walks(graph, starts, 12, p=pq[0], q=pq[1], seed=seed)
    assert walks.shape == (starts.numel(), 12) and torch.equal(walks[:, 0], starts)
    here, there = walks[:, :-1].flatten(), walks[:, 1:].flatten()
    edges = set(map(tuple, graph.edge_index.T.tolist()))
    dead_end = out_degree(graph) == 0
    for a, b in zip(here.tolist(), there.tolist(), strict=True):
        assert (a, b) in edges or (a == b and dead_end[a]), f"step {a} -> {b} is not an edge"
    assert torch.equal(walks, random_walks(graph, starts, 12, p=pq[0], q=pq[1], seed=seed))  # seeded


def _return_rate(graph: Graph, p: float, q: float, seed: int, walks: int = 6000) -> float:
    path = random_walks(graph, torch.zeros(walks, dtype=torch.long), 3, p=p, q=q, seed=seed)
    return float((path[:, 2] == path[:, 0]).double().mean())


def _assert_binomial(observed: float, expected: float, trials: int) -> None:
    sigma = math.sqrt(expected * (1 - expected) / trials)
    assert abs(observed - expected) < 6 * sigma, (observed, expected)  # 6 sigma: fails once in ~5e8 runs


@pytest.mark.parametrize(("p", "q"), [(0.25, 1.0), (4.0, 1.0), (1.0, 1.0)])
def test_return_parameter_on_a_complete_graph(seed, p, q):
    # In K5, after t -> v the other 3 neighbours of v are all neighbours of t (weight 1): P(back to t) =
    # (1/p) / (1/p + 3), whatever q is.
    _assert_binomial(_return_rate(_complete(5), p, q, seed), (1 / p) / (1 / p + 3), 6000)


@pytest.mark.parametrize(("p", "q"), [(1.0, 0.25), (1.0, 4.0), (0.5, 2.0)])
def test_in_out_parameter_on_a_cycle(seed, p, q):
    # On the 8-cycle, after t -> v the other neighbour of v is two steps from t (weight 1/q):
    # P(back to t) = (1/p) / (1/p + 1/q).
    _assert_binomial(_return_rate(_cycle(8), p, q, seed), (1 / p) / (1 / p + 1 / q), 6000)


def test_random_walks_reject_bad_arguments(seed):
    graph = grid_2d(3, 3)
    starts = torch.arange(9)
    with pytest.raises(ValueError, match="walk_length must be an int >= 1"):
        random_walks(graph, starts, 0, seed=seed)
    with pytest.raises(ValueError, match="q must be > 0"):
        random_walks(graph, starts, 4, q=0.0, seed=seed)
    with pytest.raises(ValueError, match=r"starts must hold node ids in \[0, num_nodes=9\)"):
        random_walks(graph, torch.tensor([9]), 4, seed=seed)
    with pytest.raises(TypeError, match="starts must be a 1-D int32 or int64 tensor"):
        random_walks(graph, starts.double(), 4, seed=seed)
    with pytest.raises(ValueError, match=r"context_size must be in \[2, walk_length=4\]"):
        context_windows(random_walks(graph, starts, 4, seed=seed), 5)


# --------------------------------------------------------------------------------------------------
# Skip-gram loss and node2vec training
# --------------------------------------------------------------------------------------------------


def test_windows_slide_over_each_walk(seed):
    walks = torch.arange(12).view(2, 6)
    windows = context_windows(walks, 3)
    assert windows.tolist() == [[0, 1, 2], [6, 7, 8], [1, 2, 3], [7, 8, 9], [2, 3, 4], [8, 9, 10], [3, 4, 5],
                                [9, 10, 11]]
    negatives = negative_windows(torch.tensor([5, 7]), 6, 3, 20, seed=seed)
    assert negatives.shape == (8, 3) and negatives[:2, 0].tolist() == [5, 7]


@pytest.mark.parametrize("dtype", DTYPES)
def test_skipgram_loss_matches_pyg_node2vec_loss(seed, dtype):
    graph = make_graph("power_law", 60, seed=seed)
    embedding = random_tensor((60, 12), seed=seed, dtype=torch.float64, scale=0.5).requires_grad_()
    starts = torch.arange(60).repeat(2)
    positive = context_windows(random_walks(graph, starts, 8, p=0.5, q=2.0, seed=seed), 4)
    negative = negative_windows(starts, 8, 4, 60, seed=seed + 1)
    gold = skipgram_loss(embedding, positive, negative)
    low = embedding.detach().to(dtype).requires_grad_()
    baseline = skipgram_loss(low, positive, negative)
    # PyG's Node2Vec needs pyg-lib to construct (for its walks); its loss only reads these attributes.
    table = torch.nn.Embedding.from_pretrained(embedding.detach().to(dtype), freeze=False)
    pyg = SimpleNamespace(embedding=table, embedding_dim=12, EPS=1e-15)
    candidate = pyg_nn.Node2Vec.loss(pyg, positive, negative)
    assert_agrees(candidate, gold, baseline, name="skip-gram loss")
    grad_gold, = torch.autograd.grad(gold, embedding)
    grad_baseline, = torch.autograd.grad(baseline, low)
    candidate.backward()
    assert_agrees(table.weight.grad, grad_gold, grad_baseline, gradient=True, name="d embedding")


def test_skipgram_loss_at_zero_embeddings_is_two_log_two():
    # every score is 0 and sigmoid(0) = 1/2: each of the two terms is log 2
    windows = torch.tensor([[0, 1, 2], [1, 2, 0]])
    loss = skipgram_loss(torch.zeros(3, 4, dtype=torch.float64), windows, windows)
    assert_agrees(loss, torch.tensor(2 * math.log(2), dtype=torch.float64), name="2 log 2")


@pytest.mark.parametrize("pq", [(1.0, 1.0), (0.5, 2.0)], ids=["deepwalk", "node2vec"])
def test_node2vec_separates_two_cliques(seed, pq):
    """The measurable criterion: after training, the mean cosine similarity of two distinct nodes of one
    clique exceeds that of two nodes of different cliques by at least 0.5, and every node's embedding is
    closer (cosine) to its own clique's mean embedding than to the other's.

    Observed over 20 seeds: margin >= 1.04 (intra about +0.6, inter about -0.6) for DeepWalk."""
    k = 8
    graph = _two_cliques(k)
    torch.manual_seed(seed % 2**32)
    model = Node2Vec(graph, Node2VecConfig(embedding_dim=16, walk_length=10, context_size=5, walks_per_node=10,
                                           p=pq[0], q=pq[1]))
    losses = model.fit(epochs=60, lr=0.05, seed=seed)
    assert losses[-1] < 0.5 * losses[0]
    z = F.normalize(model().detach(), dim=1)  # (2k, D)
    cosine = z @ z.T
    clique = torch.arange(2 * k) // k
    same = clique[:, None] == clique[None, :]
    distinct = ~torch.eye(2 * k, dtype=torch.bool)
    intra, inter = cosine[same & distinct].mean(), cosine[~same].mean()
    assert intra - inter >= 0.5, (float(intra), float(inter))
    centroids = F.normalize(torch.stack([z[:k].mean(0), z[k:].mean(0)]), dim=1)  # (2, D)
    assert torch.equal((z @ centroids.T).argmax(dim=1), clique)


def test_node2vec_rejects_a_window_longer_than_the_walk():
    with pytest.raises(ValueError, match=r"context_size must be in \[2, walk_length=4\]"):
        Node2Vec(grid_2d(2, 2), Node2VecConfig(walk_length=4, context_size=6))


# --------------------------------------------------------------------------------------------------
# Readout
# --------------------------------------------------------------------------------------------------

_PYG_POOL = {"sum": pyg_nn.global_add_pool, "mean": pyg_nn.global_mean_pool, "max": pyg_nn.global_max_pool}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_readout_matches_pyg_global_pooling(seed, reduce, dtype):
    sizes = [5, 1, 0, 13, 7]  # a single-node graph and an empty one (graph 2) in the batch
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = random_tensor((sum(sizes), 9), seed=seed, dtype=torch.float64).requires_grad_()
    gold = readout(x, batch, reduce=reduce, num_graphs=len(sizes))
    low, pyg = (x.detach().to(dtype).requires_grad_() for _ in range(2))
    baseline = readout(low, batch, reduce=reduce, num_graphs=len(sizes))
    candidate = _PYG_POOL[reduce](pyg, batch, size=len(sizes))
    assert_agrees(candidate, gold, baseline, name=f"{reduce} readout")
    assert gold[2].eq(0).all()  # the empty graph
    cotangent = random_tensor(gold.shape, seed=seed + 1, dtype=torch.float64)
    grad_gold, = torch.autograd.grad(gold, x, cotangent)
    grad_baseline, = torch.autograd.grad(baseline, low, cotangent.to(dtype))
    grad_candidate, = torch.autograd.grad(candidate, pyg, cotangent.to(dtype))
    assert_agrees(grad_candidate, grad_gold, grad_baseline, gradient=True, name="dx")


def test_readout_without_batch_pools_everything(seed):
    x = random_tensor((11, 4), seed=seed, dtype=torch.float64)
    assert_agrees(readout(x, reduce="mean"), x.mean(dim=0, keepdim=True), name="mean of all nodes")
    assert torch.equal(readout(x, reduce="max"), x.max(dim=0, keepdim=True).values)


def test_readout_rejects_bad_arguments(seed):
    x = random_tensor((6, 3), seed=seed, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"batch must be a 1-D int tensor with one graph id per node \(6\)"):
        readout(x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"batch must hold graph ids in \[0, num_graphs=2\)"):
        readout(x, torch.tensor([0, 0, 1, 1, 2, 2]), num_graphs=2)
    with pytest.raises(ValueError, match="reduce must be one of"):
        readout(x, reduce="min")
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor of shape \(N, F\)"):
        readout(x[:, 0])
