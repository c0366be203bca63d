"""Few-shot classification with prototypical networks, and the N-way K-shot episodes they train on.

Snell, Swersky and Zemel 2017, "Prototypical Networks for Few-shot Learning", section 2. An episode
holds a *support* set of K labelled examples for each of N classes and a *query* set to classify.
An embedding network ``f`` maps each example to ``R^D``; each class's prototype is the mean of its
support embeddings, and a query is classified by a softmax over negative squared Euclidean
distances to the prototypes (eq. 1 and 2):

    c_k        = 1/K * sum_{(x, y) in S, y = k} f(x)                                 (N, D)
    logits_qk  = -|| f(x_q) - c_k ||^2                                               (Q, N)
    p(y = k|x) = softmax_k(logits_q)
    loss       = mean over queries of -log p(y_q | x_q)

Episodes (Vinyals et al. 2016, "Matching Networks"): :func:`sample_episode` draws N classes, then
K support and Q query examples of each, disjoint, and relabels the N classes ``0 .. N-1`` in the
order drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Episode", "sample_episode", "class_prototypes", "PrototypicalNetwork"]


@dataclass(frozen=True)
class Episode:
    """Indices into a dataset for one N-way K-shot episode, labels relabelled ``0 .. N-1``."""

    classes: torch.Tensor  # (N,) the dataset's class ids, in episode-label order
    support_indices: torch.Tensor  # (N * K,) grouped by class: class 0's K examples first
    support_labels: torch.Tensor  # (N * K,)
    query_indices: torch.Tensor  # (N * Q,)
    query_labels: torch.Tensor  # (N * Q,)


def _positive_int(name: str, value) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def sample_episode(
    labels: torch.Tensor,
    n_way: int,
    k_shot: int,
    n_query: int,
    *,
    generator: torch.Generator | None = None,
) -> Episode:
    """Draw an N-way K-shot episode with ``n_query`` queries per class from a dataset's ``labels``.

    Args:
        labels: ``(M,)`` integer class id of each dataset example.
        n_way: N, the number of classes in the episode.
        k_shot: K, support examples per class.
        n_query: Q, query examples per class (disjoint from the support).
        generator: the random generator (for reproducible episodes).
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("labels must be a 1-D integer tensor holding each example's class id")
    for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
        _positive_int(name, value)
    if n_way < 2:
        raise ValueError(f"n_way must be at least 2 (one class is no classification), got {n_way}")
    classes, counts = labels.unique(return_counts=True)
    eligible = classes[counts >= k_shot + n_query]
    if eligible.numel() < n_way:
        raise ValueError(f"labels has only {eligible.numel()} classes with at least k_shot + n_query = "
                         f"{k_shot + n_query} examples; n_way={n_way} needs {n_way}")
    chosen = eligible[torch.randperm(eligible.numel(), generator=generator)[:n_way]]  # (N,)
    support, query = [], []
    for cls in chosen:
        members = (labels == cls).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        support.append(members[:k_shot])
        query.append(members[k_shot : k_shot + n_query])
    episode_labels = torch.arange(n_way)
    return Episode(
        classes=chosen,
        support_indices=torch.cat(support),
        support_labels=episode_labels.repeat_interleave(k_shot),
        query_indices=torch.cat(query),
        query_labels=episode_labels.repeat_interleave(n_query),
    )


def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """The mean embedding of each class ``0 .. n_way-1``: ``(N, D)`` from ``(S, D)`` and ``(S,)``."""
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        raise ValueError("support embeddings must have shape (S, D)")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"support_labels must be an integer tensor of shape (S,) = ({embeddings.shape[0]},)")
    _positive_int("n_way", n_way)
    counts = torch.bincount(labels, minlength=n_way)
    if labels.min() < 0 or counts.numel() != n_way or (counts == 0).any():
        raise ValueError(f"support_labels must hold every class 0 .. {n_way - 1} (and nothing else), got counts "
                         f"{counts.tolist()}")
    sums = embeddings.new_zeros(n_way, embeddings.shape[1]).index_add_(0, labels, embeddings)  # (N, D)
    return sums / counts[:, None].to(embeddings.dtype)


class PrototypicalNetwork(nn.Module):
    """An embedding network and the prototype classifier on top of it.

    ``forward(support, support_labels, query, n_way)`` returns the ``(Q, N)`` logits
    ``-|| f(query) - c_k ||^2``; :meth:`loss` adds the cross-entropy against the query labels.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        self.encoder = encoder

    def forward(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                n_way: int) -> torch.Tensor:
        support_embeddings = self.encoder(support)  # (S, D)
        query_embeddings = self.encoder(query)  # (Q, D)
        if query_embeddings.dim() != 2 or query_embeddings.shape[1:] != support_embeddings.shape[1:]:
            raise ValueError(f"encoder(query) must have shape (Q, D={support_embeddings.shape[-1]}), got "
                             f"{tuple(query_embeddings.shape)}")
        prototypes = class_prototypes(support_embeddings, support_labels, n_way)  # (N, D)
        differences = query_embeddings[:, None, :] - prototypes[None, :, :]  # (Q, N, D)
        return -differences.square().sum(dim=-1)  # (Q, N)

    def loss(self, support, support_labels, query, query_labels, n_way: int) -> torch.Tensor:
        logits = self(support, support_labels, query, n_way)
        if not isinstance(query_labels, torch.Tensor) or query_labels.shape != logits.shape[:1]:
            raise ValueError(f"query_labels must have shape (Q,) = ({logits.shape[0]},)")
        return F.cross_entropy(logits, query_labels)
