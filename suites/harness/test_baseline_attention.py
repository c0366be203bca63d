"""The cost table's anchor (fusebench/baseline_attention.py) computes attention: it is compared, like our
kernels, with the float64 reference under the interpreter, so the instruction budget it sets is the
budget of a correct kernel.

float32 and float16 only: the interpreter's bfloat16 ``tl.dot`` multiplies bit patterns (RULES, triton
issue 11584) and the anchor, which is never shipped, carries no shim; its bfloat16 build is read, not run.
"""

import pytest
import torch

from fusebench.agreement import assert_agrees
from fusebench.baseline_attention import compile_specs, forward
from fusebench.inputs import random_tensor
from reference.attention import scaled_dot_product_attention


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim, block_m, block_n", [(16, 32, 16), (32, 16, 16)])
def test_the_baseline_agrees_with_the_reference(dtype, causal, head_dim, block_m, block_n):
    shape = (2, 2, 64, head_dim)  # four query blocks at block_m=16: interior, diagonal and skipped key blocks
    q, k, v = (random_tensor(shape, seed=seed, dtype=torch.float64) for seed in (11, 12, 13))
    gold, gold_lse = scaled_dot_product_attention(q, k, v, is_causal=causal, return_lse=True)
    base, base_lse = scaled_dot_product_attention(*(t.to(dtype) for t in (q, k, v)), is_causal=causal, return_lse=True)
    out, lse2 = forward(*(t.to(dtype) for t in (q, k, v)), causal=causal, block_m=block_m, block_n=block_n)
    assert_agrees(out, gold, base)
    # the lse is kept in base 2 (float32); the reference's in the inputs' dtype carries their rounding
    assert_agrees(lse2 * torch.log(torch.tensor(2.0)).item(), gold_lse, base_lse, name="lse")


def test_the_baseline_refuses_shapes_it_does_not_tile():
    q = torch.randn(1, 1, 40, 16)
    with pytest.raises(ValueError, match="multiple of block_m=32"):
        forward(q, q, q, causal=False, block_m=32, block_n=16)


def test_the_anchor_ships_the_tutorial_tiles_in_bfloat16():
    labels = [spec.config for spec in compile_specs()]
    assert labels == ["bf16 D64 M128 N64 w4 s3", "bf16 D64 causal M128 N64 w4 s3",
                      "bf16 D128 M128 N128 w8 s3", "bf16 D128 causal M128 N128 w8 s3"]
