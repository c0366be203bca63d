"""The candidate at module level: a copy of a reference module whose seam layers run another backend; and the
exact attention, rounded to the dtype, that a low-precision composite's second baseline runs around."""

from __future__ import annotations

import copy

import torch
from torch import nn

from reference.attention import ATTENTION_BACKENDS, register_attention_backend

EXACT_ATTENTION = "float64-rounded"  # a test oracle's backend name, not a product's


def with_backend(module: nn.Module, backend: str, dtype: torch.dtype) -> nn.Module:
    """A copy of ``module`` in ``dtype`` whose every seam layer (each submodule with a ``backend`` attribute:
    attention layers, GCNConv, GATConv, ...) uses ``backend``; the original is left untouched."""
    twin = copy.deepcopy(module)
    layers = [m for m in twin.modules() if hasattr(m, "backend")]
    assert layers, f"{type(module).__name__} has no layer with a backend to switch"
    for layer in layers:
        layer.backend = backend
    return twin.to(dtype)


def _float64_rounded_attention(q, k, v, **options):
    """The reference attention computed in float64 from the inputs as given, its output rounded once to their
    dtype (and its gradients, by autograd, to theirs): the best any kernel can hand a low-precision model."""
    wide = {name: value.double() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
            for name, value in options.items()}
    result = ATTENTION_BACKENDS.get("reference")(q.double(), k.double(), v.double(), **wide)
    if isinstance(result, tuple):  # (out, lse): the lse stays float32, as every backend returns it
        return result[0].to(q.dtype), result[1].float()
    return result.to(q.dtype)



def low_precision_baselines(reference: nn.Module, run, dtype: torch.dtype) -> list:
    """The baselines of a composite in ``dtype`` (see ``fusebench.agreement``): ``run(model, dtype)`` of the eager
    model, and for float16/bfloat16 also of the model around the exact attention rounded to ``dtype``: two
    independent draws of the rounding every layer around the kernel adds, so that one lucky draw does not set the
    bar. float32 keeps the eager run alone (its rule is element-wise; the baseline is its second chance)."""
    runs = [run(copy.deepcopy(reference).to(dtype), dtype)]
    if dtype in (torch.float16, torch.bfloat16):
        register_attention_backend(EXACT_ATTENTION, _float64_rounded_attention)  # for this run only: no product
        try:  # backend list (the provider names, the coverage map's) ever shows it
            runs.append(run(with_backend(reference, EXACT_ATTENTION, dtype), dtype))
        finally:
            ATTENTION_BACKENDS.unregister(EXACT_ATTENTION)
    return runs
