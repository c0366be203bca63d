"""Fused graph attention aggregation (GAT) in Triton: edge scores, LeakyReLU, edge softmax, weighted sum.

Algorithm (Velickovic et al. 2018, "Graph Attention Networks", eq. 3-4). For destination ``i``, head
``h`` and each incoming edge ``e = (j -> i)`` (CSR row ``i``; see ``reference/graph.py``):

    s_e      = LeakyReLU(alpha_src[j, h] + alpha_dst[i, h])
    a_e      = exp(s_e) / sum over edges e' into i of exp(s_e')
    out[i,h] = sum over e into i of a_e * x[j, h, :]

One pass over the row: a program walks the row's edges in blocks and keeps a running maximum ``m``, a
running sum ``l`` and an unnormalized accumulator (the online softmax of FlashAttention), rescaling by
``exp(m_old - m_new)`` when the maximum grows, and divides by ``l`` at the end. The scores are never
written to memory; the only per-(node, head) state kept for the backward is the log-sum-exp
``lse = m + log(l)``. All heads run in one launch (the grid's second axis), and the channels of a
head are tiled by ``BLOCK_C`` (any width, masked).

Backward (no atomics, deterministic): probabilities are recomputed as ``a_e = exp(s_e - lse[i])``.

* ``dX[j] = sum over edges e out of j of a_e dOut[i]``: the same walk over the CSC layout (rows =
  sources), which ``Graph.csc()`` caches (derived from the CSR when not given).
* ``ds_e = a_e (<dOut[i, h], x[j, h]> - delta[i, h])`` with ``delta = rowsum(dOut * out)``, then through
  the LeakyReLU (slope where the pre-activation is <= 0, as ``torch.nn.functional.leaky_relu``); one
  per-edge kernel writes ``dz (E, H)`` (each edge once), and ``d alpha_dst`` / ``d alpha_src`` are its
  per-row sums over the CSR / CSC layouts, taken by the segment kernel of the CSR core ``kernels/_csr.py``.

Row scheduling (power-law graphs): the CSR core's (``kernels/_csr.py``, shared with ``kernels/spmm.py``):
a program owns a segment of at most ``edges_per_program`` (default 256) edges of one row. A split row's
segments write their partial ``(m, l, acc)`` in float32, and a second launch merges them in segment order
with the same rescaling (the split-softmax combine of flash-decoding), so a hub does not serialize the launch.

Supported: float32, float16, bfloat16 (scores, softmax and sums in float32; output in ``x``'s dtype),
any number of heads and channels, int32 and int64 indices (the int32 path raises before launch when
``num_nodes * heads * channels`` or the edge count would reach 2^31), self-loops, duplicate edges
(each counts once in the softmax), and isolated nodes: a destination with no incoming edge gets **0**
(and passes no gradient), as in the reference. Not supported: float64, attention dropout, edge
features in the score (the score is built from the two per-node terms only, as in the reference seam).

Differences from the reference: the reference materializes the ``(E, H)`` scores and softmaxes them in
the input dtype; here scores and weights stay in float32 registers, so low-precision outputs are usually
closer to the float64 gold. ``delta = rowsum(dOut * out)`` uses the float32 output, before its rounding
to the input dtype (the per-row sum of ``ds`` cancels to ``<dOut, out> - delta``, so that rounding would
survive in the score gradients); the forward then keeps an ``(N, H, C)`` float32 copy for the backward when
score gradients are needed in float16/bfloat16.

Validation before launch: x ``(N, H, C)``, alpha_src/alpha_dst ``(N, H)`` in x's dtype and on x's
device; the layouts as in ``kernels/_csr.py`` (rowptr monotonic from 0 to ``E``, indices in range).
Every load and store is masked to those ranges: no input that passes makes a kernel access memory out
of bounds.

CPU interpreter (``TRITON_INTERPRET=1``): the kernels run unchanged under it. No ``tl.dot`` is used (the
weighted sum is a broadcast multiply and a reduction, since a GAT row is a vector-matrix product per head),
so the interpreter's bfloat16 ``tl.dot`` bug (upstream triton issue 11584) does not apply. Interpreter
timings are not kernel timings, and the compiled code (registers, spills) is what ``fusebench inspect`` reads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import INT32_LIMIT, TRITON_DTYPE
from kernels._compile import CompileSpec, spec_for
from kernels._csr import (
    BLOCK_S,
    DEFAULT_EDGES_PER_PROGRAM,
    FEATURE_TILES,
    INDEX_DTYPES,
    INDEX_POINTERS,
    NUM_WARPS,
    SUM,
    SUPPORTED_DTYPES,
    TILE_ELEMENTS,
    Schedule,
    SparsePattern,
    block_range,
    check_edges_per_program,
    check_layout_type,
    check_on_layout_device,
    check_operand,
    combine_kernel,
    edge_block,
    edge_dot,
    feature_tile,
    segment_bounds,
    segment_reduce,
    segment_schedule,
    split_bounds,
    validate_layouts,
)
from kernels._versions import TRITON
from reference.graph import Compressed

__all__ = ["gat_aggregate", "compile_specs"]


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _head_segment(rowptr_ptr, seg_row_ptr, seg_start_ptr, seg_part_ptr, alpha_row_ptr, num_channels, stride_an,
                  stride_ah, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr):
    """The prologue of a (segment, head, channel tile) program: ``(head, row, start, end, part, offs_c, mask_c,
    alpha_row)``, with ``part`` -1 when the program owns the whole row and ``alpha_row`` the row's own score term."""
    pid_s = tl.program_id(0)
    head = tl.program_id(1)
    row, start, end = segment_bounds(pid_s, rowptr_ptr, seg_row_ptr, seg_start_ptr, CHUNK)
    part = tl.load(seg_part_ptr + pid_s)
    offs_c, mask_c = block_range(tl.program_id(2) * BLOCK_C, num_channels, BLOCK_C)
    alpha_row = tl.load(alpha_row_ptr + row * stride_an + head * stride_ah).to(tl.float32)
    return head, row, start, end, part, offs_c, mask_c, alpha_row


@triton.jit
def _scores(alpha_ptr, nodes, mask_e, alpha_row, head, stride_an, stride_ah, negative_slope):
    """``(z, s)`` of a block of edges: the pre-activation ``z = alpha[nodes] + alpha_row`` (the other end's term
    plus this row's) and the score ``s = LeakyReLU(z)``, in float32."""
    z = tl.load(alpha_ptr + nodes * stride_an + head * stride_ah, mask=mask_e, other=0.0).to(tl.float32) + alpha_row
    s = tl.where(z > 0, z, z * negative_slope)  # LeakyReLU
    return z, s


@triton.jit
def _gat_fwd_kernel(
    # layout (CSR) and segment schedule
    rowptr_ptr, col_ptr, seg_row_ptr, seg_start_ptr, seg_part_ptr,
    # operands
    x_ptr, asrc_ptr, adst_ptr,
    # outputs: final rows and lse, or partials (m, l, acc) of split rows
    out_ptr, lse_ptr, part_m_ptr, part_l_ptr, part_acc_ptr,
    # sizes and strides
    num_heads, num_channels, stride_xn, stride_xh, stride_an, stride_ah, negative_slope,
    BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr,
):
    head, row, start, end, part, offs_c, mask_c, a_dst = _head_segment(
        rowptr_ptr, seg_row_ptr, seg_start_ptr, seg_part_ptr, adst_ptr, num_channels, stride_an, stride_ah, BLOCK_C,
        CHUNK)

    m = tl.full([], float("-inf"), tl.float32)
    l = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_C], tl.float32)
    for k0 in range(start, end, BLOCK_E):
        offs_e, mask_e, src = edge_block(col_ptr, k0, end, BLOCK_E)
        _, s = _scores(asrc_ptr, src, mask_e, a_dst, head, stride_an, stride_ah, negative_slope)
        s = tl.where(mask_e, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))  # finite: the block holds at least one edge
        p = tl.exp(s - m_new)  # (BLOCK_E,), 0 on masked lanes
        correction = tl.exp(m - m_new)
        l = l * correction + tl.sum(p, axis=0)
        xv = tl.load(x_ptr + src[:, None] * stride_xn + head * stride_xh + offs_c[None, :],
                     mask=mask_e[:, None] & mask_c[None, :], other=0.0).to(tl.float32)  # (BLOCK_E, BLOCK_C)
        acc = acc * correction + tl.sum(p[:, None] * xv, axis=0)
        m = m_new

    if part < 0:
        nonempty = l > 0
        out = tl.where(nonempty, acc / tl.where(nonempty, l, 1.0), 0.0)  # an empty row is 0
        tl.store(out_ptr + (row * num_heads + head) * num_channels + offs_c, out.to(out_ptr.dtype.element_ty),
                 mask=mask_c)
        if tl.program_id(2) == 0:  # lse is per (row, head): the first channel tile writes it
            tl.store(lse_ptr + row * num_heads + head, tl.where(nonempty, m + tl.log(tl.where(nonempty, l, 1.0)), 0.0))
    else:
        tl.store(part_acc_ptr + (part * num_heads + head) * num_channels + offs_c, acc, mask=mask_c)
        if tl.program_id(2) == 0:  # so are m and l
            tl.store(part_m_ptr + part * num_heads + head, m)
            tl.store(part_l_ptr + part * num_heads + head, l)


@triton.jit
def _gat_combine_kernel(
    split_row_ptr, split_first_ptr, split_count_ptr,
    part_m_ptr, part_l_ptr, part_acc_ptr, out_ptr, lse_ptr,
    num_heads, num_channels,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Merge a split row's partial softmax states (m, l, acc) in segment order."""
    row, first, count = split_bounds(tl.program_id(0), split_row_ptr, split_first_ptr, split_count_ptr)
    head = tl.program_id(1)
    pid_c = tl.program_id(2)
    offs_c, mask_c = block_range(pid_c * BLOCK_C, num_channels, BLOCK_C)
    m = tl.full([], float("-inf"), tl.float32)
    l = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_C], tl.float32)
    for s0 in range(0, count, BLOCK_S):
        offs_s, mask_s = block_range(s0, count, BLOCK_S)
        parts = first + offs_s
        m_s = tl.load(part_m_ptr + parts * num_heads + head, mask=mask_s, other=float("-inf"))
        l_s = tl.load(part_l_ptr + parts * num_heads + head, mask=mask_s, other=0.0)
        acc_s = tl.load(part_acc_ptr + (parts[:, None] * num_heads + head) * num_channels + offs_c[None, :],
                        mask=mask_s[:, None] & mask_c[None, :], other=0.0)
        m_new = tl.maximum(m, tl.max(m_s, axis=0))  # every segment of a split row holds edges: finite
        scale = tl.exp(m_s - m_new)  # (BLOCK_S,), 0 on masked lanes
        correction = tl.exp(m - m_new)
        l = l * correction + tl.sum(l_s * scale, axis=0)
        acc = acc * correction + tl.sum(scale[:, None] * acc_s, axis=0)
        m = m_new
    tl.store(out_ptr + (row * num_heads + head) * num_channels + offs_c, (acc / l).to(out_ptr.dtype.element_ty),
             mask=mask_c)
    if pid_c == 0:  # the first channel tile writes the (row, head)'s lse
        tl.store(lse_ptr + row * num_heads + head, m + tl.log(l))


@triton.jit
def _gat_bwd_dx_kernel(
    # layout: CSC (rows = sources, col = destinations) and its schedule
    rowptr_ptr, col_ptr, seg_row_ptr, seg_start_ptr, seg_part_ptr,
    asrc_ptr, adst_ptr, lse_ptr, g_ptr,
    dx_ptr, part_ptr,
    num_heads, num_channels, stride_an, stride_ah, negative_slope,
    BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr,
):
    """dX[j, h] = sum over edges e = (j -> i) of a_e dOut[i, h], a_e = exp(s_e - lse[i, h])."""
    head, row, start, end, part, offs_c, mask_c, a_src = _head_segment(
        rowptr_ptr, seg_row_ptr, seg_start_ptr, seg_part_ptr, asrc_ptr, num_channels, stride_an, stride_ah, BLOCK_C,
        CHUNK)
    acc = tl.zeros([BLOCK_C], tl.float32)
    for k0 in range(start, end, BLOCK_E):
        offs_e, mask_e, dst = edge_block(col_ptr, k0, end, BLOCK_E)
        _, s = _scores(adst_ptr, dst, mask_e, a_src, head, stride_an, stride_ah, negative_slope)
        lse = tl.load(lse_ptr + dst * num_heads + head, mask=mask_e, other=float("inf"))  # masked: exp(-inf) = 0
        p = tl.where(mask_e, tl.exp(s - lse), 0.0)
        gv = tl.load(g_ptr + (dst[:, None] * num_heads + head) * num_channels + offs_c[None, :],
                     mask=mask_e[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(p[:, None] * gv, axis=0)
    if part < 0:
        tl.store(dx_ptr + (row * num_heads + head) * num_channels + offs_c, acc.to(dx_ptr.dtype.element_ty),
                 mask=mask_c)
    else:
        tl.store(part_ptr + (part * num_heads + head) * num_channels + offs_c, acc, mask=mask_c)


@triton.jit
def _gat_bwd_score_kernel(
    # layout: CSR and its schedule
    rowptr_ptr, col_ptr, perm_ptr, seg_row_ptr, seg_start_ptr,
    x_ptr, asrc_ptr, adst_ptr, lse_ptr, delta_ptr, g_ptr,
    dz_ptr,
    num_heads, num_channels, stride_xn, stride_xh, stride_an, stride_ah, negative_slope,
    BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr,
):
    """Per edge and head: dz_e = a_e (<dOut[i], x[j]> - delta[i]) * LeakyReLU'(z_e), stored at the edge id."""
    head = tl.program_id(1)
    row, start, end = segment_bounds(tl.program_id(0), rowptr_ptr, seg_row_ptr, seg_start_ptr, CHUNK)
    a_dst = tl.load(adst_ptr + row * stride_an + head * stride_ah).to(tl.float32)
    lse = tl.load(lse_ptr + row * num_heads + head)
    delta = tl.load(delta_ptr + row * num_heads + head)
    for k0 in range(start, end, BLOCK_E):
        offs_e, mask_e, src = edge_block(col_ptr, k0, end, BLOCK_E)
        eid = tl.load(perm_ptr + offs_e, mask=mask_e, other=0)
        dot = edge_dot(x_ptr + head * stride_xh, src, mask_e, g_ptr + (row * num_heads + head) * num_channels, g_ptr,
                       eid, num_channels, stride_xn, False, BLOCK_E, BLOCK_C)  # <dOut[i, h], x[j, h]>
        z, s = _scores(asrc_ptr, src, mask_e, a_dst, head, stride_an, stride_ah, negative_slope)
        p = tl.exp(s - lse)
        dz = p * (dot - delta) * tl.where(z > 0, 1.0, negative_slope)
        tl.store(dz_ptr + eid * num_heads + head, dz, mask=mask_e)


# --------------------------------------------------------------------------------------------------
# Shipped configurations (a fixed rule from the channel width)
# --------------------------------------------------------------------------------------------------

# The channel tile is the core's feature tile (kernels/_csr.py); the edge tile has its own exception.
_CHANNEL_TILES, _NUM_WARPS, _BLOCK_S = FEATURE_TILES, NUM_WARPS, BLOCK_S  # the names compile_specs() reads


def _edge_tile(block_c: int) -> int:
    # triton 3.6 (the lent GPU's) spilled on sm_90: E32 C64 in the forward, E64 C16 in the dx backward (fp32,
    # int32 indices, a ragged channel count); half those tiles spill under neither.
    if TRITON < (3, 9) and block_c in (16, 64):
        return {16: 32, 64: 16}[block_c]
    return min(64, TILE_ELEMENTS // block_c)


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------


def _check_int32(index_dtype, num_rows: int, heads: int, channels: int, num_edges: int) -> None:
    if index_dtype != torch.int32:
        return
    if num_rows * heads * max(channels, 1) > INT32_LIMIT or num_edges * heads > INT32_LIMIT:
        raise ValueError(f"x: num_nodes x heads x channels = {num_rows} x {heads} x {channels} (or edges x heads = "
                         f"{num_edges} x {heads}) overflows the int32 index path (offsets beyond 2^31 - 1); "
                         "use int64 indices")


def _forward(csr: Compressed, schedule: Schedule, x, alpha_src, alpha_dst, negative_slope: float, *, out=None,
             lse=None):
    """``(out (N, H, C), lse (N, H) float32)``; ``out``/``lse`` may be given contiguous (tests guard them)."""
    num_nodes, heads, channels = x.shape
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if lse is None:
        lse = torch.zeros((num_nodes, heads), dtype=torch.float32, device=x.device)
    if num_nodes == 0 or heads == 0 or channels == 0:
        return out, lse
    partials = max(schedule.num_partials, 1)
    _check_int32(csr.rowptr.dtype, max(partials, num_nodes), heads, channels, csr.num_edges)
    part_m = torch.empty((partials, heads), dtype=torch.float32, device=x.device)
    part_l = torch.empty((partials, heads), dtype=torch.float32, device=x.device)
    part_acc = torch.empty((partials, heads, channels), dtype=torch.float32, device=x.device)
    block_c = feature_tile(channels)
    block_e = min(_edge_tile(block_c), schedule.chunk)
    grid = (schedule.seg_row.numel(), heads, triton.cdiv(channels, block_c))
    _gat_fwd_kernel[grid](
        csr.rowptr, csr.col, schedule.seg_row, schedule.seg_start, schedule.seg_part,
        x, alpha_src, alpha_dst, out, lse, part_m, part_l, part_acc,
        heads, channels, x.stride(0), x.stride(1), alpha_src.stride(0), alpha_src.stride(1), negative_slope,
        BLOCK_E=block_e, BLOCK_C=block_c, CHUNK=schedule.chunk, num_warps=NUM_WARPS,
    )
    if schedule.split_row.numel():
        grid = (schedule.split_row.numel(), heads, triton.cdiv(channels, block_c))
        _gat_combine_kernel[grid](schedule.split_row, schedule.split_first, schedule.split_count, part_m, part_l,
                                  part_acc, out, lse, heads, channels, BLOCK_S=BLOCK_S, BLOCK_C=block_c,
                                  num_warps=NUM_WARPS)
    return out, lse


def _grad_x(csc: Compressed, schedule: Schedule, alpha_src, alpha_dst, lse, grad_out, negative_slope, x_dtype):
    num_nodes, heads, channels = grad_out.shape
    dx = torch.empty((num_nodes, heads, channels), dtype=x_dtype, device=grad_out.device)
    if num_nodes == 0 or heads == 0 or channels == 0:
        return dx
    part = torch.empty((max(schedule.num_partials, 1), heads, channels), dtype=torch.float32, device=dx.device)
    block_c = feature_tile(channels)
    block_e = min(_edge_tile(block_c), schedule.chunk)
    grid = (schedule.seg_row.numel(), heads, triton.cdiv(channels, block_c))
    _gat_bwd_dx_kernel[grid](
        csc.rowptr, csc.col, schedule.seg_row, schedule.seg_start, schedule.seg_part,
        alpha_src, alpha_dst, lse, grad_out, dx, part,
        heads, channels, alpha_src.stride(0), alpha_src.stride(1), negative_slope,
        BLOCK_E=block_e, BLOCK_C=block_c, CHUNK=schedule.chunk, num_warps=NUM_WARPS,
    )
    if schedule.split_row.numel():  # split rows: the partials are plain sums, the core's combine adds them in order
        features = heads * channels
        block_f = feature_tile(features)
        grid = (schedule.split_row.numel(), triton.cdiv(features, block_f))
        combine_kernel[grid](schedule.split_row, schedule.split_first, schedule.split_count, part, part, dx, part,
                              features, csc.num_edges, IS_MAX=False, BLOCK_S=BLOCK_S, BLOCK_F=block_f,
                              num_warps=NUM_WARPS)
    return dx


def _grad_scores(csr: Compressed, schedule: Schedule, x, alpha_src, alpha_dst, lse, delta, grad_out, negative_slope):
    num_nodes, heads, channels = x.shape
    dz = torch.zeros((csr.num_edges, heads), dtype=torch.float32, device=x.device)  # (E, H)
    if csr.num_edges == 0 or heads == 0:
        return dz
    block_c = feature_tile(channels)
    block_e = min(_edge_tile(block_c), schedule.chunk)
    _gat_bwd_score_kernel[(schedule.seg_row.numel(), heads)](
        csr.rowptr, csr.col, csr.perm, schedule.seg_row, schedule.seg_start,
        x, alpha_src, alpha_dst, lse, delta, grad_out, dz,
        heads, channels, x.stride(0), x.stride(1), alpha_src.stride(0), alpha_src.stride(1), negative_slope,
        BLOCK_E=block_e, BLOCK_C=block_c, CHUNK=schedule.chunk, num_warps=NUM_WARPS,
    )
    return dz


def _edge_sums(layout: Compressed, chunk: int, values: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``out[r] = sum over positions k of row r of values[perm[k]]`` (values indexed by edge id)."""
    by_edge = Compressed(layout.rowptr, layout.perm, layout.perm)  # gather rows of `values` by edge id
    out, _ = segment_reduce(by_edge, segment_schedule(layout.rowptr, chunk), values, num_out_rows=num_rows, reduce=SUM)
    return out


# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class _GatAggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha_src, alpha_dst, pattern: SparsePattern, negative_slope: float):
        schedule = pattern.csr_schedule()
        if any(ctx.needs_input_grad[1:3]) and x.dtype != torch.float32:
            # The score gradients' delta = rowsum(dOut * out) must see out before it is rounded to float16/bfloat16:
            # a row's ds_e = a_e (<dOut, x_j> - delta) sum to <dOut, out> - delta, a near-total cancellation, so
            # out's rounding (~|out| * 2^-9 in bfloat16) survives whole in d alpha_dst / d alpha_src and, at one
            # channel, exceeds k times the eager reference's error. The forward writes float32 and the caller
            # gets it rounded once: the same values as a direct low-precision store.
            out32, lse = _forward(pattern.csr, schedule, x, alpha_src, alpha_dst, negative_slope,
                                  out=torch.empty(x.shape, dtype=torch.float32, device=x.device))
            out = out32.to(x.dtype)
        else:
            out, lse = _forward(pattern.csr, schedule, x, alpha_src, alpha_dst, negative_slope)
            out32 = out
        ctx.save_for_backward(x, alpha_src, alpha_dst, out32, lse)
        ctx.pattern, ctx.negative_slope = pattern, negative_slope
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, alpha_src, alpha_dst, out, lse = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        need_x, need_src, need_dst = ctx.needs_input_grad[:3]
        grad_out = grad_out.contiguous()
        num_nodes = x.shape[0]
        grad_x = grad_src = grad_dst = None
        csc = pattern.transposed() if (need_x or need_src) else None
        if need_x:
            grad_x = _grad_x(csc, segment_schedule(csc.rowptr, pattern.chunk), alpha_src, alpha_dst, lse, grad_out,
                             ctx.negative_slope, x.dtype)
        if need_src or need_dst:
            delta = (grad_out.float() * out.float()).sum(-1)  # (N, H)
            dz = _grad_scores(pattern.csr, pattern.csr_schedule(), x, alpha_src, alpha_dst, lse, delta, grad_out,
                              ctx.negative_slope)  # (E, H)
            if need_dst:
                grad_dst = _edge_sums(pattern.csr, pattern.chunk, dz, num_nodes).to(alpha_dst.dtype)
            if need_src:
                grad_src = _edge_sums(csc, pattern.chunk, dz, num_nodes).to(alpha_src.dtype)
        return grad_x, grad_src, grad_dst, None, None


# --------------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------------


def gat_aggregate(x: torch.Tensor, alpha_src: torch.Tensor, alpha_dst: torch.Tensor, csr: Compressed,
                  csc: Compressed | None = None, *, negative_slope: float = 0.2, edges_per_program: int | None = None,
                  check_indices: bool = True) -> torch.Tensor:
    """GAT aggregation: ``out[i, h] = sum over e = (j -> i) of softmax_e(LeakyReLU(as[j,h] + ad[i,h])) x[j, h]``.

    Args:
        x: projected features ``(N, H, C)``.
        alpha_src, alpha_dst: per-node source / destination score terms ``(N, H)``, in ``x``'s dtype.
        csr: rows = destinations (``Graph.csr()``, a :class:`reference.graph.Compressed`).
        csc: rows = sources (``Graph.csc()``), for the backward; derived from ``csr`` when None.
        negative_slope: the LeakyReLU slope (>= 0).
        edges_per_program: segment length of the row schedule (default 256, a power of two).
        check_indices: check index values (skip only for layouts built by ``reference.graph.Graph``).

    Shapes:
        x ``(N, H, C)``, alpha_src/alpha_dst ``(N, H)`` -> ``(N, H, C)`` in ``x``'s dtype.
    """
    check_layout_type("csr", csr)
    num_nodes = csr.num_rows
    check_operand("x", x, 3, "(N, H, C)")
    if x.shape[0] != num_nodes:
        raise ValueError(f"x must have num_nodes={num_nodes} rows (the layout's rows), got {x.shape[0]}")
    for name, alpha in (("alpha_src", alpha_src), ("alpha_dst", alpha_dst)):
        check_operand(name, alpha, 2, "(N, H)")
        if tuple(alpha.shape) != tuple(x.shape[:2]):
            raise ValueError(f"{name} must have shape (N, H) = {tuple(x.shape[:2])}, got {tuple(alpha.shape)}")
        if alpha.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype {x.dtype}, got {alpha.dtype}")
        if alpha.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {alpha.device}")
    _check_int32(csr.rowptr.dtype, num_nodes, x.shape[1], x.shape[2], csr.num_edges)
    validate_layouts(csr, csc, num_nodes, num_nodes, check_values=check_indices)
    check_on_layout_device("x", x, csr)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) or negative_slope < 0:
        raise ValueError(f"negative_slope must be a non-negative number, got {negative_slope!r}")
    chunk = check_edges_per_program(edges_per_program)
    x = x if x.stride(2) == 1 else x.contiguous()
    alpha_src, alpha_dst = alpha_src.contiguous(), alpha_dst.contiguous()  # one (N, H) stride pair for both
    pattern = SparsePattern(csr, csc, num_nodes, chunk)
    return _GatAggregate.apply(x, alpha_src, alpha_dst, pattern, float(negative_slope))


def _triton_attention_aggregate(graph, x, alpha_src, alpha_dst, *, negative_slope):
    """The ``"triton"`` backend of ``reference.gnn.attention_aggregate`` (arguments validated there)."""
    if x.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(f"the triton attention backend supports {SUPPORTED_DTYPES}, not {x.dtype}")
    return gat_aggregate(x, alpha_src, alpha_dst, graph.csr(), graph.csc(), negative_slope=negative_slope,
                         check_indices=False)



# --------------------------------------------------------------------------------------------------
# What `fusebench inspect` compiles
# --------------------------------------------------------------------------------------------------

def _argument_types(feature: str, index: str) -> dict[str, str]:
    """The compile type of every argument of the GAT kernels, by role (see ``spec_for``)."""
    return {**dict.fromkeys(("x_ptr", "asrc_ptr", "adst_ptr", "g_ptr", "out_ptr", "dx_ptr"), f"*{feature}"),
            # the log-sum-exp, the backward's row sums and edge gradients and the split rows' partials
            **dict.fromkeys(("lse_ptr", "delta_ptr", "dz_ptr", "part*_ptr"), "*fp32"),
            **dict.fromkeys(INDEX_POINTERS, f"*{index}"),  # the layout and the schedule
            "num_*": "i32", "stride_*": "i32", "negative_slope": "fp32"}


def compile_specs() -> list[CompileSpec]:
    """Every configuration the launchers can pick, per feature dtype and index dtype."""
    specs = []
    for dtype in SUPPORTED_DTYPES:
        for index_dtype in INDEX_DTYPES:
            ft, it = TRITON_DTYPE[dtype], TRITON_DTYPE[index_dtype]
            types = _argument_types(ft, it)
            for block_c in _CHANNEL_TILES:
                block_e = _edge_tile(block_c)
                label = f"{ft} {it} E{block_e} C{block_c} w{_NUM_WARPS}"
                meta = {"BLOCK_E": block_e, "BLOCK_C": block_c, "CHUNK": DEFAULT_EDGES_PER_PROGRAM}
                shipped = dict(num_warps=_NUM_WARPS, num_stages=1, config=label)
                tiles = ("rowptr_ptr", "BLOCK_E", "BLOCK_C", "CHUNK")  # a launch's index dtype and tiles
                specs.append(spec_for("gat.forward", _gat_fwd_kernel, meta, types, **shipped,
                                      launch_keys=("x_ptr", *tiles)))
                specs.append(spec_for("gat.combine", _gat_combine_kernel, {"BLOCK_S": _BLOCK_S, "BLOCK_C": block_c},
                                      types, **shipped, launch_keys=("out_ptr", "split_row_ptr", "BLOCK_C")))
                specs.append(spec_for("gat.backward_dx", _gat_bwd_dx_kernel, meta, types, **shipped,
                                      launch_keys=("g_ptr", *tiles)))
                specs.append(spec_for("gat.backward_scores", _gat_bwd_score_kernel, meta, types, **shipped,
                                      launch_keys=("x_ptr", *tiles)))
    return specs
