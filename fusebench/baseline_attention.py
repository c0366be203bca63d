"""The anchor of ``fusebench inspect``'s attention cost table: a minimal FlashAttention-2 forward in the
style of the Triton fused-attention tutorial, compiled beside ours but never shipped or launched by the
library.

What makes the tutorial's main loop cheap, and what this kernel therefore does:

* Q, K, V and O move through tensor descriptors (``tl.make_tensor_descriptor``: TMA on sm_90);
* the key blocks strictly below the diagonal run a loop with no mask at all, the diagonal block (causal)
  a second loop with the causal mask, so the bulk of the work pays for no mask;
* the scale and the row maximum enter as one fused multiply-add per score, ``s * c - m * c``, with
  ``c = scale * log2(e)`` and exponentials in base 2.

Limits (it is an anchor, not a product): ``(B, H, N, D)`` contiguous tensors, ``Nq == Nk`` a multiple of
BLOCK_M, causal aligned to the top left, no masks, no GQA, no backward. ``forward`` launches it (the
interpreter runs it on CPU; the checks compare it with the reference, see suites/harness/test_sass_cost.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._compile import CompileSpec, spec_for

_LOG2E = 1.4426950408889634


@triton.jit
def _baseline_key_loop(acc, l_i, m_i, q, k_desc, v_desc, offs_m, kv_row, qk_scale, lo, hi,
                       DIAGONAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys ``[lo, hi)`` into the online softmax; only the DIAGONAL loop masks (key > query)."""
    for start_n in tl.range(lo, hi, BLOCK_N):
        k = k_desc.load([kv_row + start_n, 0])  # (BLOCK_N, D)
        s = tl.dot(q, k.T)  # (BLOCK_M, BLOCK_N), raw q.k
        if DIAGONAL:
            future = start_n + tl.arange(0, BLOCK_N)[None, :] > offs_m[:, None]
            s = tl.where(future, -1.0e6, s)
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_new[:, None])  # one FFMA per score
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = v_desc.load([kv_row + start_n, 0])  # (BLOCK_N, D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _baseline_fwd_kernel(Q_ptr, K_ptr, V_ptr, O_ptr, LSE_ptr, N_CTX, sm_scale,
                         HEAD_DIM: tl.constexpr, IS_CAUSAL: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    rows = tl.num_programs(1) * N_CTX  # every (batch, head) stacked: one 2-D view of each tensor
    q_desc = tl.make_tensor_descriptor(Q_ptr, [rows, HEAD_DIM], [HEAD_DIM, 1], [BLOCK_M, HEAD_DIM])
    k_desc = tl.make_tensor_descriptor(K_ptr, [rows, HEAD_DIM], [HEAD_DIM, 1], [BLOCK_N, HEAD_DIM])
    v_desc = tl.make_tensor_descriptor(V_ptr, [rows, HEAD_DIM], [HEAD_DIM, 1], [BLOCK_N, HEAD_DIM])
    o_desc = tl.make_tensor_descriptor(O_ptr, [rows, HEAD_DIM], [HEAD_DIM, 1], [BLOCK_M, HEAD_DIM])
    kv_row = pid_bh * N_CTX
    q_row = kv_row + pid_m * BLOCK_M
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)

    q = q_desc.load([q_row, 0])
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    interior_end = pid_m * BLOCK_M if IS_CAUSAL else N_CTX
    acc, l_i, m_i = _baseline_key_loop(acc, l_i, m_i, q, k_desc, v_desc, offs_m, kv_row, qk_scale,
                                       0, interior_end, False, BLOCK_N)
    if IS_CAUSAL:
        acc, l_i, m_i = _baseline_key_loop(acc, l_i, m_i, q, k_desc, v_desc, offs_m, kv_row, qk_scale,
                                           interior_end, interior_end + BLOCK_M, True, BLOCK_N)
    o_desc.store([q_row, 0], (acc / l_i[:, None]).to(O_ptr.dtype.element_ty))
    tl.store(LSE_ptr + pid_bh * N_CTX + offs_m, m_i + tl.math.log2(l_i))


def _scratch(size: int, alignment: int, stream):
    """Global memory for device-side tensor descriptors (triton asks for it at launch)."""
    return torch.empty(size, dtype=torch.int8, device="cuda" if torch.cuda.is_available() else "cpu")


def forward(q, k, v, *, causal: bool, block_m: int, block_n: int, scale: float | None = None):
    """Launch the anchor on contiguous ``(B, H, N, D)`` tensors; returns (out, lse in base 2)."""
    batch, heads, n, d = q.shape
    if not (q.shape == k.shape == v.shape) or n % block_m or block_m % block_n:
        raise ValueError(f"the baseline takes q, k, v of one shape with N a multiple of block_m={block_m} "
                         f"(a multiple of block_n={block_n}), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    q, k, v = (t.contiguous() for t in (q, k, v))
    out = torch.empty_like(q)
    lse = torch.empty((batch, heads, n), dtype=torch.float32, device=q.device)
    triton.set_allocator(_scratch)
    scale = d**-0.5 if scale is None else scale
    _baseline_fwd_kernel[(n // block_m, batch * heads)](q, k, v, out, lse, n, scale, HEAD_DIM=d, IS_CAUSAL=causal,
                                                        BLOCK_M=block_m, BLOCK_N=block_n)
    return out, lse


# The anchor's configurations, the tutorial's for Hopper: (head dim, BLOCK_M, BLOCK_N, warps, stages).
CONFIGS = ((64, 128, 64, 4, 3), (128, 128, 128, 8, 3))


# Never launched by the catalog, so no recorded specialization: compiled as the tutorial launches it,
# every pointer and the sequence length divisible by 16.
_TUTORIAL_LAUNCH = ("Q_ptr", "K_ptr", "V_ptr", "O_ptr", "LSE_ptr", "N_CTX")


def compile_specs() -> list[CompileSpec]:
    """The anchor in bfloat16, causal and not, at D64 and D128 (``fusebench inspect --baseline``)."""
    types = {"LSE_ptr": "*fp32", "*_ptr": "*bf16", "N_CTX": "i32", "sm_scale": "fp32"}
    specs = []
    for head_dim, bm, bn, warps, stages in CONFIGS:
        for causal in (False, True):
            label = f"bf16 D{head_dim}{' causal' if causal else ''} M{bm} N{bn} w{warps} s{stages}"
            specs.append(spec_for("baseline.forward", _baseline_fwd_kernel,
                                  {"HEAD_DIM": head_dim, "IS_CAUSAL": causal, "BLOCK_M": bm, "BLOCK_N": bn}, types,
                                  num_warps=warps, num_stages=stages, config=label, divisible=_TUTORIAL_LAUNCH,
                                  specialization="all /16 (the tutorial's launch)", expects_tensor_cores=True))
    return specs
