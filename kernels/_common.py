"""What every kernel module needs and none owns: the interpreter decision, the device check, the index
limit of the int32 path, the torch -> Triton type names, and the interpreter's bfloat16 rounding made a GPU's.

``kernels/attention.py`` still keeps its own interpreter flag (its tests patch it) until it moves here.

The interpreter's bfloat16 rounding (triton 3.6 to 3.9): a float32 value converted to bfloat16 (an explicit
``.to(tl.bfloat16)``, or the implicit cast of a store into a bfloat16 tensor) keeps the top 16 bits, i.e. rounds
toward zero, where a GPU's ``cvt.rn.bf16.f32`` and torch round to nearest even. Truncation errs twice as far and
always the same way, so sums of stored bfloat16 results (a model's gradients, summed over layers and tokens) drift
on the CPU several times further from the float64 gold than on a GPU, and bfloat16 checks failed for an error no
GPU makes. Under the interpreter, and only where its conversion is found to truncate, :func:`_round_bfloat16_to_nearest`
replaces that one conversion (``InterpreterBuilder.cast_impl`` for float32 -> bfloat16) with round to nearest even;
every other conversion is triton's. Compiled kernels never see it.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter as _interpreter
from triton.runtime.interpreter import InterpretedFunction

__all__ = ["INTERPRETING", "INT32_LIMIT", "TRITON_DTYPE", "check_device"]


@triton.jit
def _probe():
    pass


# The interpreter decision, taken by triton when it decorated the kernel above (TRITON_INTERPRET at import):
# every kernel module imported in the same process got the same one.
INTERPRETING = isinstance(_probe, InterpretedFunction)


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 ``values`` rounded to nearest, ties to even (as a GPU and torch);
    NaN stays a quiet NaN, overflow becomes infinity."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # carries into the exponent, up to infinity
    quiet_nan = (bits >> 16) | 0x0040
    return np.where(np.isnan(values), quiet_nan, rounded).astype(np.uint16)


def _interpreter_truncates_bfloat16() -> bool:
    # 1 + 2^-8 + 2^-9 lies above the midpoint between two bfloat16 neighbours: nearest rounds up, truncation down.
    probe = _interpreter.TensorHandle(np.array([1 + 2**-8 + 2**-9], dtype=np.float32), tl.float32)
    converted = _interpreter.interpreter_builder.cast_impl(probe, tl.bfloat16)
    return int(converted.data.view(np.uint16)[0]) != int(float32_to_bfloat16_bits(probe.data)[0])


def _round_bfloat16_to_nearest() -> None:
    """Make the interpreter's float32 -> bfloat16 conversion round to nearest even (see the module docstring)."""
    if not _interpreter_truncates_bfloat16():  # fixed upstream, or already corrected by an earlier import
        return
    triton_cast = _interpreter.InterpreterBuilder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            return _interpreter.TensorHandle(float32_to_bfloat16_bits(src.data), dst_type.scalar)
        return triton_cast(self, src, dst_type)

    _interpreter.InterpreterBuilder.cast_impl = cast_impl


if INTERPRETING:
    _round_bfloat16_to_nearest()

INT32_LIMIT = 2**31 - 1  # the largest offset the int32 index path can hold

# Triton's names for the torch dtypes the kernels take (compile signatures)
TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
                torch.int32: "i32", torch.int64: "i64"}


def check_device(name: str, t: torch.Tensor) -> None:
    if not INTERPRETING and t.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor (the Triton kernels compile for GPUs), got device "
                         f"{t.device}; set TRITON_INTERPRET=1 before importing fusebench's kernels to emulate them "
                         "on the CPU")
