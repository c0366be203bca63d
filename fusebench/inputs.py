"""Inputs for numerical checks: fresh random tensors per seed, poisoned outputs, guard zones.

* :func:`random_tensor` draws from a seeded generator, so a case is reproducible from its seed, and
  never returns zeros (a zero input hides a kernel that forgot to load it).
* :func:`randomize_parameters` redraws a module's every parameter the same way (LayerNorms included).
* :func:`poisoned` returns an output buffer full of NaN (or a sentinel for integers): a kernel that
  forgets to write an element leaves NaN behind, which the agreement policy never passes.
* :class:`GuardedTensor` places a tensor as a view inside a larger buffer whose margins hold NaN (or a
  sentinel). Reads past the view pick up NaN, which leaks into outputs; writes past it change the
  margin. ``assert_intact()`` checks the margins afterwards. This is how bounds are proven under the
  Triton CPU interpreter, which does not catch out-of-bounds access itself.
"""

from __future__ import annotations

import hashlib
import os
import random

import torch

__all__ = ["run_seed", "seed_for", "random_tensor", "randomize_parameters", "poisoned", "GuardedTensor",
           "SENTINEL_INT"]

SENTINEL_INT = -(2**30) - 7  # an index no valid graph or sequence offset holds


def run_seed() -> int:
    """This run's base seed: ``FUSEBENCH_SEED`` when set (to replay a failure), otherwise fresh."""
    env = os.environ.get("FUSEBENCH_SEED")
    if env is not None:
        return int(env)
    if not hasattr(run_seed, "_value"):
        run_seed._value = random.SystemRandom().randrange(2**31)
    return run_seed._value


def seed_for(*parts: object, base: int | None = None) -> int:
    """A seed derived from the run seed and a name (a test id, a case name): stable within a run."""
    text = "|".join(map(str, (run_seed() if base is None else base, *parts)))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") % (2**63)


def random_tensor(
    shape,
    *,
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    scale: float = 1.0,
    distribution: str = "normal",
) -> torch.Tensor:
    """A fresh random tensor (normal or uniform in [-1, 1)) times ``scale``; no element is zero.

    Drawn in float64 on the CPU from ``seed`` and then cast, so the float64 gold and the low-precision
    candidate start from the same values (the cast is the only difference).
    """
    generator = torch.Generator().manual_seed(seed)
    if distribution == "normal":
        values = torch.randn(shape, generator=generator, dtype=torch.float64)
    elif distribution == "uniform":
        values = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1
    else:
        raise ValueError(f"distribution must be 'normal' or 'uniform', got {distribution!r}")
    # Push exact (and near) zeros away from zero: a zero hides loads that never happened.
    tiny = 1e-3
    values = torch.where(values.abs() < tiny, torch.full_like(values, tiny).copysign(values), values)
    out = (values * scale).to(dtype)
    if dtype.is_floating_point and (out == 0).any():  # rounding in a tiny dtype could still reach zero
        out = torch.where(out == 0, torch.full_like(out, torch.finfo(dtype).tiny), out)
    return out.to(device)


def randomize_parameters(module, seed: int, *, unit_scale: tuple[str, ...] = ()):
    """Redraw every parameter of ``module`` in place and return it: LayerNorms, biases and [CLS] tokens included, so
    none is the identity or zero and a skipped or swapped one shows.

    A weight of fan-in n (the product of its dimensions after the first) gets scale 1/sqrt(n), so activations stay
    O(1); vectors, and parameters whose name contains a word of ``unit_scale`` (embedding tables), get 1. Each
    parameter's seed is hashed from ``seed`` and its name, so it never meets the inputs' ``seed + i``.
    """
    import math

    with torch.no_grad():
        for name, parameter in module.named_parameters():
            fan_in = math.prod(parameter.shape[1:]) if parameter.dim() >= 2 else 1
            scale = 1.0 if any(word in name for word in unit_scale) else fan_in**-0.5
            parameter.copy_(random_tensor(parameter.shape, seed=seed_for("parameter", name, base=seed),
                                          dtype=parameter.dtype, scale=scale))
    return module


def poisoned(shape, *, dtype: torch.dtype, device: str | torch.device = "cpu") -> torch.Tensor:
    """An output buffer whose every element is NaN (floats) or ``SENTINEL_INT`` (integers)."""
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.full(shape, SENTINEL_INT, dtype=dtype, device=device)


class GuardedTensor:
    """A tensor stored as a view in the middle of a buffer with poisoned margins.

    ``margin`` elements of NaN (floats) or ``SENTINEL_INT`` (integers) sit before and after the view in
    memory, so an out-of-bounds read returns poison and an out-of-bounds write changes the margin.
    Build one from values (an input) or from a shape (an output, itself poisoned).
    """

    def __init__(self, values: torch.Tensor, margin: int = 4096):
        if margin < 1:
            raise ValueError(f"margin must be >= 1, got {margin}")
        self.margin = margin
        numel = values.numel()
        self.buffer = poisoned((numel + 2 * margin,), dtype=values.dtype, device=values.device)
        self.tensor = self.buffer[margin : margin + numel].view(values.shape)
        self.tensor.copy_(values)

    @classmethod
    def empty(cls, shape, *, dtype: torch.dtype, device="cpu", margin: int = 4096) -> GuardedTensor:
        return cls(poisoned(shape, dtype=dtype, device=device), margin=margin)

    def _margins(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.buffer[: self.margin], self.buffer[-self.margin :]

    def assert_intact(self, name: str = "tensor") -> None:
        """Raise ``AssertionError`` if anything was written into the margins around the view."""
        for side, margin in zip(("before", "after"), self._margins(), strict=True):
            if margin.is_floating_point():
                changed = ~torch.isnan(margin)
            elif margin.dtype == torch.bool:  # SENTINEL_INT cast to bool: the margins hold True
                changed = ~margin
            else:
                changed = margin != SENTINEL_INT
            if changed.any():
                where = changed.nonzero().flatten().tolist()[:8]
                raise AssertionError(
                    f"{name}: out-of-bounds write into the guard zone {side} the tensor at offsets {where}"
                )
