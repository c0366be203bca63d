"""The candidate at module level: a copy of a reference module whose seam layers run another backend."""

from __future__ import annotations

import copy

import torch
from torch import nn


def with_backend(module: nn.Module, backend: str, dtype: torch.dtype) -> nn.Module:
    """A copy of ``module`` in ``dtype`` whose every seam layer (each submodule with a ``backend`` attribute:
    attention layers, GCNConv, GATConv, ...) uses ``backend``; the original is left untouched."""
    twin = copy.deepcopy(module)
    layers = [m for m in twin.modules() if hasattr(m, "backend")]
    assert layers, f"{type(module).__name__} has no layer with a backend to switch"
    for layer in layers:
        layer.backend = backend
    return twin.to(dtype)
