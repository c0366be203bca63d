"""The candidate at module level: a copy of a reference module whose seam layers run another backend; the exact
attention, rounded to the dtype, that a low-precision composite's second baseline runs around; and the kernel's
calls inside a model, recorded and judged one by one as op-level checks on the inputs the model gave them."""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from fusebench.agreement import Cancellation, assert_agrees
from reference import backends
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


def _widened(options: dict) -> dict:
    """An attention call's options with its floating tensors (an additive mask) in float64."""
    return {name: value.double() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
            for name, value in options.items()}


def _float64_rounded_attention(q, k, v, **options):
    """The reference attention computed in float64 from the inputs as given, its output rounded once to their
    dtype (and its gradients, by autograd, to theirs): the best any kernel can hand a low-precision model."""
    result = ATTENTION_BACKENDS.get("reference")(q.double(), k.double(), v.double(), **_widened(options))
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
        # registered for this run only, so that no list of backends (provider names, coverage map) shows it
        register_attention_backend(EXACT_ATTENTION, _float64_rounded_attention)
        try:
            runs.append(run(with_backend(reference, EXACT_ATTENTION, dtype), dtype))
        finally:
            ATTENTION_BACKENDS.unregister(EXACT_ATTENTION)
    return runs


@dataclass
class AttentionCall:
    """One call of an attention backend inside a model: its inputs, what it returned and the gradient it got."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    options: dict
    out: torch.Tensor
    grad_out: torch.Tensor | None = None  # set by backward, when the output needed a gradient
    fn: object = field(default=None, repr=False)


@contextlib.contextmanager
def recorded_attention_calls(backend: str):
    """Within the block, every call of the attention ``backend`` is recorded (yields the growing list of
    :class:`AttentionCall`); the seam's own observer (the coverage map's) still sees every call."""
    calls: list[AttentionCall] = []

    def observer(seam, name, fn):
        inner = fn if previous is None else previous(seam, name, fn)
        if seam != ATTENTION_BACKENDS.seam or name != backend:
            return inner

        def recording(q, k, v, **options):
            result = inner(q, k, v, **options)
            out = result[0] if isinstance(result, tuple) else result
            call = AttentionCall(*(t.detach().clone() for t in (q, k, v)), dict(options), out.detach().clone(), fn=fn)
            if out.requires_grad:
                out.register_hook(lambda grad: setattr(call, "grad_out", grad.detach().clone()))
            calls.append(call)
            return result

        return recording

    previous = backends.observe(observer)
    try:
        yield calls
    finally:
        backends.observe(previous)


def _attention_with_gradients(fn, q, k, v, options, grad_out):
    leaves = [t.detach().requires_grad_(grad_out is not None) for t in (q, k, v)]
    result = fn(*leaves, **options)
    out = result[0] if isinstance(result, tuple) else result
    if grad_out is None:
        return out.detach(), []
    return out.detach(), list(torch.autograd.grad(out, leaves, grad_out.to(out.dtype)))


def score_gradient_terms(q, k, v, d_out, scale) -> Cancellation:
    """What dQ and dK sum where dS = P * (dP - rowsum(dO * O)) cancels (one key per query row, or a softmax one-hot
    up to float32 at scores ~1e3): the exact dS is (nearly) zero and the policy's relative bound has no scale.

    dS rounds two dot products of length Dv, each term within max|dO| * max|v|, carried into dQ = scale * dS K (at
    most Nk terms of max|k|) and dK = scale * dS^T Q (at most Nq terms of max|q|)."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    carried = scale * max(k.shape[2] * float(k.abs().max()), q.shape[2] * float(q.abs().max()))
    return Cancellation(terms=2 * v.shape[-1], term_bound=float(d_out.abs().max()) * float(v.abs().max()) * carried)


def assert_recorded_calls_agree(calls: list[AttentionCall], name: str) -> int:
    """Judge each recorded kernel call at op level, on the very inputs (and upstream gradient) the model gave it:
    gold the reference attention in float64, baseline the eager reference in the call's dtype, k-rule as in the
    kernel tests. The call is run again on those inputs for its gradients; its output must be what the model
    got, bit for bit (the kernels are deterministic), so the call judged is the call that ran. Returns the
    number of calls judged."""
    reference = ATTENTION_BACKENDS.registered["reference"]
    assert calls, f"{name}: the kernel never ran inside the model"
    for index, call in enumerate(calls):
        where = f"{name}, attention call {index}"
        out, grads = _attention_with_gradients(call.fn, call.q, call.k, call.v, call.options, call.grad_out)
        assert torch.equal(out, call.out), f"{where}: the kernel run again gives another output"
        wide = _widened(call.options)
        gold_out, gold_grads = _attention_with_gradients(reference, call.q.double(), call.k.double(),
                                                         call.v.double(), wide, call.grad_out)
        base_out, base_grads = _attention_with_gradients(reference, call.q, call.k, call.v, call.options,
                                                         call.grad_out)
        assert_agrees(out, gold_out, base_out, name=f"{where} output")
        if call.grad_out is None:  # the output reached no gradient (a layer whose result the loss never reads)
            continue
        cancels = score_gradient_terms(call.q.double(), call.k.double(), call.v.double(), call.grad_out.double(),
                                       call.options.get("scale"))
        for grad_name, cand, gold, base in zip(("dq", "dk", "dv"), grads, gold_grads, base_grads, strict=True):
            assert_agrees(cand, gold, base, gradient=True, name=f"{where} {grad_name}",
                          cancels=cancels if grad_name in ("dq", "dk") else None)
    return len(calls)
