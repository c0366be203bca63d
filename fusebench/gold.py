"""Gold results and verdicts for the runner: what a provider's output is judged against.

Gold is the reference in float64 on the device (in float32 on the device where a float64 attention would be
too large: the row's ``gold`` says which), the baseline the reference in the case's dtype. A result is the
whole output (forward) and every input gradient (backward) of the very function that is then timed; each is
judged by :func:`fusebench.agreement.check` (the eager reference itself, being the baseline, by
:func:`fusebench.agreement.check_baseline`: measured against gold, not judged).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fusebench import cases as catalog
from fusebench.agreement import check, check_baseline
from fusebench.providers import Provider, Workload

__all__ = ["GOLD_ELEMENTS", "Gold", "gold_precision", "compute_gold", "forward_and_grads", "split", "verdicts"]

# Largest float64 attention gold: 2^27 score elements (1 GiB of float64 scores per tensor). Beyond it the
# gold is the reference in float32 on the device: still far more precise than the bf16/fp16 candidates.
GOLD_ELEMENTS = 1 << 27


def gold_precision(case, device: str) -> tuple[torch.dtype, str]:
    """(dtype of the gold, how the rows name it): float64, or float32 on the device for large attention."""
    if isinstance(case, catalog.AttentionCase):
        pairs = sum(n * n for n in case.seqlens) if case.seqlens else case.batch * case.seq_q * case.seq_k
        if case.heads * pairs > GOLD_ELEMENTS:
            return torch.float32, f"float32 reference on {device} (float64 too costly at this size)"
    return torch.float64, "float64 reference"


def forward_and_grads(fn, wl: Workload, need_grads: bool):
    """(output, input gradients or None) of one call of ``fn`` on fresh leaf copies of the inputs."""
    inputs = [t.detach().clone().requires_grad_(need_grads) for t in wl.inputs.values()]
    with torch.set_grad_enabled(need_grads):
        out = fn(*inputs)
    grads = torch.autograd.grad(out, inputs, wl.dout) if need_grads else None
    return out.detach(), grads


@dataclass
class Gold:
    description: str
    out: torch.Tensor
    base_out: torch.Tensor
    grads: tuple | None
    base_grads: tuple | None


def compute_gold(case, wl: Workload, reference: Provider, need_grads: bool) -> Gold:
    """The reference at gold precision and in the workload's dtype (the baseline), with gradients if asked."""
    dtype, description = gold_precision(case, str(wl.device))
    gold_wl = wl.cast(dtype)
    out, grads = forward_and_grads(reference.build(case, gold_wl), gold_wl, need_grads)
    base_out, base_grads = forward_and_grads(reference.build(case, wl), wl, need_grads)
    return Gold(description, out, base_out, grads, base_grads)


def split(mode: str, value) -> tuple[torch.Tensor | None, tuple | None]:
    """(output, input gradients) of what a mode function returned (:func:`fusebench.measure.mode_function`)."""
    if mode == "forward":
        return value, None
    if mode == "backward":
        return None, tuple(value)
    return value[0], tuple(value[1:])


def verdicts(gold: Gold, names, out, grads, provider: str) -> list:
    """One verdict for the output (when given) and one per input gradient (when given)."""
    if provider == "reference":  # the eager reference is the baseline: measured against gold, not judged
        def judge(cand, g, _base, **kw):
            return check_baseline(cand, g, **kw)
    else:
        judge = check
    found = []
    if out is not None:
        found.append(judge(out.detach(), gold.out, gold.base_out, name=f"{provider} output"))
    if grads is not None:
        if gold.grads is None:
            raise ValueError("the gold was computed without gradients; a backward mode needs them")
        for name, grad, gold_grad, base_grad in zip(names, grads, gold.grads, gold.base_grads, strict=True):
            found.append(judge(grad, gold_grad, base_grad, gradient=True, name=f"{provider} d{name}"))
    return found
