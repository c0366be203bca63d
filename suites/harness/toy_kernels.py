"""Tiny Triton kernels for testing `fusebench inspect` itself (jit functions must live in a file)."""

import triton
import triton.language as tl

from kernels._compile import CompileSpec


@triton.jit
def _matmul_tile(a_ptr, b_ptr, c_ptr, stride_am, stride_bk, stride_cm,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a = tl.load(a_ptr + rm[:, None] * stride_am + rk[None, :])
    b = tl.load(b_ptr + rk[:, None] * stride_bk + rn[None, :])
    acc = tl.dot(a, b)
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :], acc)


SIGNATURE = {"a_ptr": "*fp16", "b_ptr": "*fp16", "c_ptr": "*fp32", "stride_am": "i32", "stride_bk": "i32",
             "stride_cm": "i32", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr"}
DIVISIBLE = ("a_ptr", "b_ptr", "c_ptr", "stride_am", "stride_bk", "stride_cm")


def matmul_spec(block: int = 64, num_warps: int = 4, **options) -> CompileSpec:
    label = f"B{block} w{num_warps}" + "".join(f" {k}={v}" for k, v in options.items())
    return CompileSpec("toy.matmul", _matmul_tile, SIGNATURE, {"BLOCK_M": block, "BLOCK_N": block, "BLOCK_K": block},
                       num_warps=num_warps, num_stages=1, config=label, divisible=DIVISIBLE, expects_tensor_cores=True,
                       options=options)
