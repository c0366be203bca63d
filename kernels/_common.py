"""What every kernel module needs and none owns: the interpreter decision, the device check, the index
limit of the int32 path and the torch -> Triton type names.

``kernels/attention.py`` still keeps its own interpreter flag (its tests patch it) until it moves here.
"""

from __future__ import annotations

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction

__all__ = ["INTERPRETING", "INT32_LIMIT", "TRITON_DTYPE", "check_device"]


@triton.jit
def _probe():
    pass


# The interpreter decision, taken by triton when it decorated the kernel above (TRITON_INTERPRET at import):
# every kernel module imported in the same process got the same one.
INTERPRETING = isinstance(_probe, InterpretedFunction)

INT32_LIMIT = 2**31 - 1  # the largest offset the int32 index path can hold

# Triton's names for the torch dtypes the kernels take (compile signatures)
TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
                torch.int32: "i32", torch.int64: "i64"}


def check_device(name: str, t: torch.Tensor) -> None:
    if not INTERPRETING and t.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor (the Triton kernels compile for GPUs), got device "
                         f"{t.device}; set TRITON_INTERPRET=1 before importing fusebench's kernels to emulate them "
                         "on the CPU")
