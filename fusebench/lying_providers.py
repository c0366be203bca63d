"""Providers that lie, for checking the checks: each is wrong, or slower, in one way a real kernel can be.

Register one through the seam a real kernel uses (``reference.attention.register_attention_backend``,
``reference.gnn.register_aggregation_backend``) and the runner must catch it: no figure for a wrong result,
a flag for a slower one. The harness tests (``suites/harness/test_lying_providers.py``) and the real-clock
demonstration (``tools/timing_trust_demo.py``) both draw on these.
"""

from __future__ import annotations

import time

import torch

import reference.attention as attention
import reference.gnn as gnn

__all__ = ["honest", "zeros", "one_percent_off", "ignores_the_causal_mask", "wrong_only_when_timed",
           "busy_waits_longer", "ignores_isolated_nodes"]


def honest(q, k, v, **options):
    """The reference attention itself: the provider every liar below departs from."""
    return attention.scaled_dot_product_attention(q, k, v, backend="reference", **options)


def zeros(q, k, v, **options):
    return honest(q, k, v, **options) * 0  # still differentiable, so its gradients are judged too


def one_percent_off(q, k, v, **options):
    return honest(q, k, v, **options) * 1.01


def ignores_the_causal_mask(q, k, v, *, is_causal=False, **options):
    return honest(q, k, v, is_causal=False, **options)


def wrong_only_when_timed(q, k, v, **options):
    out = honest(q, k, v, **options)
    return out if torch.is_grad_enabled() else out * 0  # right under grad, wrong under no_grad


def busy_waits_longer(fraction: float):
    """The honest provider, then a busy wait of ``fraction`` of the time it took (0.3: 30% slower).

    A busy wait, not ``time.sleep``: a sleeper yields its core, and on an oversubscribed machine the scheduler
    then favours it, so a sleeping liar can come out faster than the honest provider.
    """

    def slower(q, k, v, **options):
        start = time.perf_counter()
        out = honest(q, k, v, **options)
        deadline = start + (1 + fraction) * (time.perf_counter() - start)
        while time.perf_counter() < deadline:
            pass
        return out

    return slower


def ignores_isolated_nodes(graph, x, *, reduce, edge_weight, normalize):
    out = gnn.aggregate(graph, x, reduce=reduce, edge_weight=edge_weight, normalize=normalize)
    isolated = torch.bincount(graph.edge_index[1], minlength=x.shape[0]) == 0
    return torch.where(isolated[:, None], x, out)  # as if every node had a self-loop
