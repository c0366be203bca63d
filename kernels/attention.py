"""Fused attention in Triton, FlashAttention-2 shaped: forward and backward without an (N x N) buffer.

Algorithm (Dao 2023, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning";
Dao et al. 2022 for the original tiling):

* Forward: each program owns one block of ``BLOCK_M`` queries of one (batch, head) and walks the keys in
  blocks of ``BLOCK_N``. It keeps a running row maximum ``m``, a running sum ``l`` and an unnormalized
  output accumulator (the online softmax), rescaling both by ``exp(m_old - m_new)`` when the maximum
  grows, and divides by ``l`` once at the end. Scores live in base-2 units so the exponentials are
  ``exp2``: ``scale * log2(e)`` and the row maximum enter as one fused multiply-add per score,
  ``exp2(s * c - m)``. One pass over K and V; the only per-row state written out is the log-sum-exp
  (kept in base 2, ``lse2 = m + log2(l)``, for the backward).
* Every kernel walks its blocks in two kinds of loop (FlashAttention-2's split): interior blocks that no
  mask can touch (inside both lengths and, causal, wholly left of the diagonal) run with no mask and
  unmasked loads; the boundary and diagonal blocks, and every block when an ``attn_mask`` or key padding
  is given, run through ``_mask_scores``, the one place masks are applied.
* K and V reach the loops of the forward and of dQ through pointers (``cp.async`` on sm_80 and later) or,
  on sm_90 when the strides allow (16-bit elements, a 16-byte aligned base and row pitch, unit stride along
  D), through per-sequence tensor descriptors (TMA: one instruction per tile, no per-thread addresses, and
  rows past the sequence and columns past the head dimension arrive as zeros). ``_kv_by_tma`` decides.
* The output is written once, in its dtype, by the forward kernel; in training with 16-bit inputs the same
  epilogue also stores O in float32 for the backward's ``delta`` (see ``_FlashAttention``), with no cast pass.
* Backward: nothing from the forward but ``lse2`` is kept; probabilities are recomputed as
  ``p = exp2(s - lse2)``. A small pre-pass computes ``delta = rowsum(dO * O)``; one kernel owns a key
  block and accumulates dK and dV over every query block (and, for grouped-query attention, over every
  query head sharing that key/value head); a second kernel owns a query block and accumulates dQ over
  the key blocks. Memory is O(N) in sequence length for every pass.

Supported (the conventions of ``reference/attention.py``, which is the spec these kernels are checked
against):

* layout ``(B, H, N, D)`` or ``(B, N, H, D)`` with arbitrary strides (the kernels take every stride; no
  hidden ``.contiguous()``), and packed variable-length batches ``(total, H, D)`` with ``cu_seqlens``;
* float16, bfloat16 and float32 inputs, float32 accumulation; any head dimension from 1 to 256 (the D
  tile is padded to a power of two >= 16 and masked; 16, 32, 64, 80, 96, 128 and 256 are tested), value
  head dimension may differ from the query/key one; any sequence lengths, cross-attention ``Nq != Nk``;
* grouped-query and multi-query attention: query head ``h`` reads key/value head ``h // (Hq // Hkv)``;
* ``is_causal`` aligned to the bottom right (key ``j`` allowed for query ``i`` when ``j <= i + Nk - Nq``),
  a boolean ``attn_mask`` (True = attend) or an additive float one, broadcastable to ``(B, Hq, Nq, Nk)``
  and read tile by tile through its strides (stride 0 on broadcast dimensions: never expanded in
  memory), a boolean ``key_padding_mask`` ``(B, Nk)`` (True = padding), and any combination of them;
  with causal and padding together, ``causal_alignment`` puts the diagonal at the bottom right of the
  padded keys (``"padded"``) or of each sequence's valid keys (``"valid"``, flash-attn's meaning), as the
  reference's ``key_causal_positions``: the launcher turns the padding mask into those int32 key
  positions (-1 on padding), and the kernels' causal test reads a key's position instead of its index;
* a query row with no key left yields zeros and ``lse = -inf`` in the forward and zero gradients.

Not supported: float64 (use the reference), dropout, gradients with respect to ``attn_mask`` (an error
says so when the mask requires grad) or through the returned log-sum-exp (marked non-differentiable),
head dimensions above 256, masks on varlen batches (only ``causal``).

Differences from the reference:

* The reference materializes the ``(Nq, Nk)`` scores and softmaxes them in the input dtype; here the
  scores never leave registers and the softmax is accumulated in float32, so low-precision outputs are
  usually *closer* to the float64 gold than the reference's own.
* The probabilities are rounded to the input dtype before the ``P @ V`` product (as FlashAttention does).
* float32 inputs use IEEE float32 products (``input_precision="ieee"``), not TF32, so that float32
  results meet float32 tolerances; this costs speed on GPUs with TF32 tensor cores.
* The returned log-sum-exp is float32 like the reference's (computed and saved in float32, in base 2).
  It is not differentiable.
* The backward recomputes the scores exactly as the forward computed them (same orientation
  ``Q @ K^T``, same scaling): at logits ~1e3 an ulp of disagreement between the forward's scores and
  the backward's is a ~1e-4 relative error in every probability (the dK/dV kernel of the Triton
  tutorial computes ``K @ Q^T`` instead, and loses that much in float32 at such logits).
* dQ is computed by its own kernel (a second recompute of ``P``) instead of atomic adds: deterministic,
  and no float32 scratch buffer, at the cost of one more pass over K and V in the backward.
* A fully masked row gives zeros and ``lse = -inf`` whichever mask empties it (causal with ``Nq > Nk``,
  padding, a boolean row of False, an additive row of ``-inf``), and zero gradients.

Autotuning: ``FWD_CONFIGS``, ``DKDV_CONFIGS`` and ``DQ_CONFIGS`` sit next to the kernels with their
``key=``; ``_fits`` prunes the tiles that would not fit (register spills measured with ``fusebench inspect``)
at the padded head dimension, and ``compile_specs()`` lists every shipped (kernel, config) for offline
compilation.

CPU interpreter (``TRITON_INTERPRET=1``, how CI runs these kernels, with the small
``_INTERPRETER_CONFIG``):

* What the CPU check covers: the whole program logic of every kernel, executed element by element with
  numpy: index arithmetic and strides for both layouts and varlen offsets, boundary masks for ragged
  lengths and padded head dimensions (with guard zones that prove no out-of-bounds read or write), the
  causal/boolean/additive/padding masks and their broadcast strides, the online softmax and its
  rescaling, the fully-masked-row handling, the log-sum-exp, the backward recomputation, float32
  accumulation, and the rounding of loads, stores and ``P`` to float16/bfloat16 (to nearest even, as on a GPU:
  ``kernels/_common.py`` corrects the interpreter's bfloat16 conversion, which truncates).
* The bfloat16 shim: in triton 3.9 the interpreter's ``tl.dot`` on bfloat16 operands multiplies raw
  bit patterns (upstream triton issue 11584; the outputs are off by ~1e10). When, and only when, the
  kernels are interpreted, ``_INTERPRETER_BF16_UPCAST`` is True and every ``tl.dot`` upcasts its bfloat16
  operands to float32 first. Products of two bfloat16 numbers are exact in float32, so this computes the
  same sums as a bfloat16 tensor-core dot with float32 accumulation, up to summation order. The flag is
  derived from the very decision triton made when it decorated the kernels (``InterpretedFunction`` or
  not), and the launchers pass ``UPCAST_BF16=False`` whenever that decision was "compile", so the shim
  cannot reach compiled GPU code (``compile_specs`` below, used to compile offline, always sets it False).
* Strides: the interpreter reads memory through the same pointer arithmetic, so strided and transposed
  views are covered; 64-bit offsets are used for batch and head bases (large tensors) on both paths.
* The TMA path (forward and dQ): the interpreter never takes it by itself (it is sm_90's); the tests force
  it (``_tma_available``) so that its program logic runs on CPU, triton's interpreter emulating the
  descriptors' loads and zero fill. Its compiled form is read by ``fusebench inspect`` (``... tma`` rows,
  ``UTMALDG`` in the SASS) and run by the ``gpu`` tier on an sm_90 machine (``fusebench gpu-check``).
* dQ's ``DELTA_IN_MMA`` configurations (128-row tiles, sm_90, bfloat16) take ``-delta`` into the tensor cores; the
  interpreter's config never does, so tests give dQ such a tile (``wide_dq_tile`` in the tests) and check
  ``_negated_delta_parts`` bit for bit on its own.
* What only a GPU run confirms: the bfloat16 (and float16) tensor-core ``tl.dot`` itself (including how its
  float32 accumulator adds the three bfloat16 parts of ``-delta``), the code the
  compiler generates (layouts, software pipelining, ``num_warps``/``num_stages``), the autotuned configs
  other than the interpreter's, out-of-bounds behaviour of the real hardware, sequence lengths beyond a
  few hundred (the ``gpu`` test tier runs 1k-16k), and speed. Interpreter timings are not kernel timings.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime import _allocation as _triton_allocation
from triton.runtime.interpreter import InterpretedFunction

from kernels._common import TRITON_DTYPE  # importing _common also makes the interpreter round bfloat16 as a GPU
from kernels._compile import CompileSpec, spec_for
from kernels._versions import TRITON
from reference.attention import (
    key_causal_positions,
    validate_causal_alignment,
    validate_cu_seqlens,
    validate_masks,
    validate_scale,
)

__all__ = ["attention", "varlen_attention", "compile_specs", "FWD_CONFIGS", "DKDV_CONFIGS", "DQ_CONFIGS",
           "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256
_LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): scores are kept in base 2 (exp2 is the fast exp)

# --------------------------------------------------------------------------------------------------
# Autotune configurations (next to the kernels they tune)
# --------------------------------------------------------------------------------------------------



# GPU configs: (BLOCK_M, BLOCK_N) tiles, warps and pipeline stages of the FlashAttention-2 / Triton
# tutorial family. Large head dimensions keep the tiles small so that Q, K, V and the accumulator fit in
# shared memory and registers (see _fits).
FWD_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3),
                         (64, 32, 4, 4), (64, 16, 4, 2), (32, 32, 4, 2), (32, 16, 2, 2)]
]
# DELTA_IN_MMA (bfloat16 only): dP's accumulator starts at -delta, one more 16-deep tensor-core step of
# `_negated_delta_parts` times ones, instead of a subtraction per score. It takes a tenth of the loop's
# instructions off sm_90's 128-row tiles and adds 4% (D128) to 8% (D64) to their tensor-core work, which by the
# static model (`fusebench inspect --cost`: issue clocks below tensor clocks) already bounds them: which wins is
# for a GPU to time, so both variants are configurations and the autotuner measures them. Only 128-row tiles
# have it: with the extra operands mma.sync's M64 N64 tile spills on sm_80 (68 B at D128).
_DELTA_IN_MMA_TILES = ((128, 128, 8, 1), (128, 128, 8, 2), (128, 64, 8, 2))
DQ_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "DELTA_IN_MMA": delta_in_mma}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(128, 128, 8, 1), (128, 128, 8, 2), (128, 64, 8, 2), (32, 128, 8, 2), (64, 64, 8, 2),
                         (32, 64, 4, 2), (16, 64, 4, 2), (32, 32, 4, 1), (16, 32, 4, 1), (16, 16, 2, 1)]
    for delta_in_mma in ((False, True) if (bm, bn, w, s) in _DELTA_IN_MMA_TILES else (False,))
]
DKDV_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(64, 64, 4, 1), (32, 64, 4, 1), (64, 64, 8, 2), (16, 64, 4, 2), (32, 32, 4, 2),
                         (16, 32, 4, 2), (16, 16, 4, 2)]
]


def _serves_dtype(config: triton.Config, dtype: torch.dtype) -> bool:
    """Whether a configuration is compiled and timed for this input dtype: a DELTA_IN_MMA one only for bfloat16 (for
    another dtype the kernel takes the plain path, and the configuration would be a second copy of a plain one)."""
    return dtype == torch.bfloat16 or not config.kwargs.get("DELTA_IN_MMA", False)


# The CPU interpreter runs numpy per program: one small config, no benchmarking (a single config is
# never timed by triton.autotune). 16 is the smallest tile tl.dot accepts.
_INTERPRETER_CONFIG = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)


# (kernel, BLOCK_M, BLOCK_N, warps, padded head dim) -> the targets on which `fusebench inspect` measured
# register spills for that config since the interior and masked loops were split (sm_100 is read as
# sm_90, other targets as sm_80): exceptions to the rules of _fits, which are not monotone in the tile.
# (dK/dV's M32 N64 spilled on both at D64 and left the list; its 16x16 fallback runs two stages: with one it
# spilled at D64 on sm_90 and, with a key-padding mask, at D256 on both, where no other tile fits.)
_MEASURED_SPILLS = {
    ("forward", 128, 32, 4, 64): (80,),
    ("forward", 64, 32, 4, 128): (80,),
    ("dq", 16, 64, 4, 128): (90,),
    ("dkdv", 64, 64, 8, 64): (80,),
    ("forward", 32, 32, 4, 128): (90,),  # with a key-padding mask (int32 key positions), 4 B
    # measured on launched specializations: the training forward's float32 O copy (STORE_O32), causal at D128
    # (32 B) and varlen at D64 (8 B); dQ's M32 N128 without GQA (GROUPS = 1), 8 B
    ("forward", 128, 64, 8, 128): (80,),
    ("forward", 64, 32, 4, 64): (80,),
    ("dq", 32, 128, 8, 64): (90,),
}
# Measured with a mask tile (MASK_KIND 1 or 2: the correctness tier's additive mask with key padding, causal):
# more live registers per score tile, so larger tiles spill where unmasked launches of them do not.
_MASKED_SPILLS = {
    ("forward", 128, 128, 8, 64): (80, 90),
    ("forward", 128, 32, 4, 64): (90,),
    ("forward", 32, 16, 2, 64): (90,),
    ("forward", 128, 128, 8, 128): (90,),
    ("forward", 128, 64, 8, 128): (80, 90),
    ("forward", 64, 64, 4, 128): (80, 90),
    ("forward", 32, 16, 2, 256): (80,),
    ("dkdv", 16, 64, 4, 64): (80,),
    ("dq", 64, 64, 8, 64): (80,),
    ("dq", 128, 64, 8, 128): (90,),
    # the sm_90 backward tiles, masked (the kernel gate over launched specializations): dQ 128x128 spills 376-476 B
    # at D64 and 16-68 B at D128 by TMA, dQ M16 N16 w2 8 B at D128 by TMA, dK/dV's one-warpgroup M32 N64 8 B at D128
    ("dq", 128, 128, 8, 64): (90,),
    ("dq", 128, 128, 8, 128): (90,),
    ("dq", 16, 16, 2, 128): (90,),
    ("dkdv", 32, 64, 4, 128): (90,),
}
# Those measured on the pointer path only: the forward's TMA path (sm_90) frees the per-thread addresses.
_POINTER_PATH_SPILLS = set()
# And those measured on the TMA path only (sm_90): dQ's, bfloat16 D128 causal, 8 B.
_TMA_PATH_SPILLS = {("dq", 32, 32, 4, 128)}
if TRITON < (3, 9):  # the lent GPU machine's triton 3.6 spills these on sm_90 (12 B and 4 B, bfloat16); 3.9 does not
    _MEASURED_SPILLS.update({("forward", 128, 128, 8, 128): (90,), ("dq", 16, 32, 4, 128): (90,),
                             ("dkdv", 16, 16, 4, 128): (90,),  # float16 causal+padding, 4 B (two stages)
                             ("dq", 128, 128, 8, 128): (90,)})  # by TMA: 8 to 104 B, bfloat16
    _POINTER_PATH_SPILLS.add(("forward", 128, 128, 8, 128))  # with TMA: 244 registers, no spill (triton 3.6)
    _TMA_PATH_SPILLS.add(("dq", 32, 64, 4, 128))  # bfloat16 D128: 4 B by TMA (none by pointers)
    # measured by the device-versions gate on launched specializations (8 B each): varlen dQ at D64, the
    # masked D256 forward's narrowest tile (either path), and the training forward's M32 N32 at D64 by TMA
    _MEASURED_SPILLS[("dq", 16, 16, 2, 64)] = (90,)
    _MASKED_SPILLS[("forward", 32, 16, 2, 256)] = (80, 90)
    _TMA_PATH_SPILLS.add(("forward", 32, 32, 4, 64))


def _fits(config: triton.Config, block_d: int, kernel: str, capability: int = 80, tma: bool = False,
          masked: bool = False) -> bool:
    """Whether a config's tiles fit registers and shared memory at this (padded) head dimension.

    Forward and dQ: Q, K, V tiles and one accumulator; above a 64-wide head dimension the long side of
    the tile shrinks so that tile * BLOCK_D <= 64 * 128 elements. dK/dV: two (BLOCK_N, BLOCK_D) float32
    accumulators live through the whole loop, so BLOCK_M * BLOCK_N shrinks with BLOCK_D squared. The
    bounds are where ``fusebench inspect`` (sm_80 and sm_90, float16 and bfloat16) measured no register
    spill: it measured spills for dK/dV at M64 N128 (D64), M32 N64 (D128) and M16 N32 (D256), and for dQ
    at M32 N32 (D256). Register allocation is not monotone in the tile (M64 N64 spills with 4 warps and
    not with 8 on sm_80, a 16x16 dK/dV tile with 2 warps spills at D128), so the lists keep only configs
    whose every shipped (config, head dim) compiled spill-free on both targets. Some rules depend on the
    target (``capability``), since wgmma keeps its operands and accumulators in fewer registers per thread
    than mma.sync: the forward with 8 warps at D128 (a 128x64 tile fits sm_80, a 128x128 one spills there
    and fits sm_90), dQ's 128-row tiles and dK/dV's one-stage tiles of one warpgroup (sm_90 only; they
    cost a third fewer loop instructions per score there, ``fusebench inspect --cost``). Otherwise dK/dV
    keeps BLOCK_N <= 32 from D128 up: its two-stage M16 N64 tile spills on sm_90 with triton 3.9 (since its
    interior and masked loops) and with triton 3.6, the lent GPU machine's (``.ci/device-versions`` runs
    the gate under triton 3.6). dK/dV's M64 N64 tile with 8 warps computes every score twice on sm_90 (both
    warpgroups hold the whole tile); the 4-warp one does not. dQ's 128x128 tile by pointers spills with two
    stages (bfloat16 D64 causal, float16 D128 causal+padding) and with one at D128; by TMA it fits both
    to D128. ``tma``: the TMA path (forward, dQ), which the pointer-path spills of ``_POINTER_PATH_SPILLS``
    do not concern and those of ``_TMA_PATH_SPILLS`` do. ``masked``: a launch that loads a mask tile
    (``MASK_KIND`` 1 or 2), whose measured spills are ``_MASKED_SPILLS``.
    """
    bm, bn = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    hopper = capability in (90, 100)
    key = (kernel, bm, bn, config.num_warps, block_d)
    if (80, 90)[hopper] in _MEASURED_SPILLS.get(key, ()) and not (tma and key in _POINTER_PATH_SPILLS):
        return False
    if masked and (80, 90)[hopper] in _MASKED_SPILLS.get(key, ()):
        return False
    if tma and hopper and key in _TMA_PATH_SPILLS:
        return False
    if kernel == "forward" and config.num_warps == 8 and 64 < block_d <= 128:
        return bm * bn <= (128 * 128 if hopper else 128 * 64)
    if kernel == "dq" and bm * bn == 128 * 128:  # sm_90's wgmma tile: by pointers one stage up to D64, by TMA to D128
        return hopper and (block_d <= 128 if tma else block_d <= 64 and config.num_stages == 1)
    if kernel == "dq" and bm == 128:  # spills 756 B on sm_80 at D128; none on sm_90
        return hopper and block_d <= 128
    if kernel == "dkdv" and config.num_stages == 1:  # one warpgroup's wgmma tiles: sm_90 only (they spill on sm_80)
        return hopper and bm * bn * block_d <= 64 * 64 * 64
    if kernel == "dkdv":
        if block_d >= 128 and bn > 32:  # M16 N64 spills on sm_90 (triton 3.9 with the split loops; triton 3.6)
            return False
        return bm * bn * block_d * max(block_d, 64) <= 64**4
    if kernel == "dq" and block_d > 128:
        return bm * bn <= 16 * 32
    return block_d <= 64 or max(bm, bn) * block_d <= 64 * 128


def _pruner(kernel: str):
    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        widest = max(args["BLOCK_D"], args["BLOCK_DV"])
        capability = triton.runtime.driver.active.get_current_target().arch  # pruning runs on the GPU only
        tma, masked = bool(args.get("USE_TMA", False)), args.get("MASK_KIND", 0) != 0
        dtype = args.get("DO_ptr", args["Q_ptr"]).dtype  # dQ decides DELTA_IN_MMA by dO's dtype, as its kernel
        return [c for c in configs if _fits(c, widest, kernel, capability, tma, masked) and _serves_dtype(c, dtype)
                ] or configs[-1:]

    return prune


# Autotune keys; triton.autotune adds the dtypes of the tensor arguments itself.
_DKDV_KEY = ["N_Q", "N_K", "BLOCK_D", "BLOCK_DV", "IS_CAUSAL", "MASK_KIND", "HAS_KPM", "IS_VARLEN"]
_KEY_WITH_TMA = _DKDV_KEY + ["USE_TMA"]  # the forward and dQ, which read K and V by TMA on sm_90

# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _dot(a, b, acc, UPCAST_BF16: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """``acc + a @ b`` in float32 (``acc=None``: ``a @ b``), the accumulator inside the tensor-core dot; UPCAST_BF16
    is the interpreter-only bf16 shim (see the docstring)."""
    if UPCAST_BF16:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _mask_scores(s, om, on, n_q, n_k, mask_base, stride_mm, stride_mn, kpm_base, stride_kpn, sm_scale,
                 IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, HAS_KPM: tl.constexpr):
    """Apply every mask to a tile of raw scores ``s = q.k`` (unscaled); ``om``/``on`` broadcast to its shape.

    ``om`` holds query rows and ``on`` key columns, as ``[M, 1]``/``[1, N]`` (forward, dQ) or
    ``[1, M]``/``[N, 1]`` (the transposed tiles of dK/dV): the code is the same either way. This is the
    one place masks are applied; ``_unmasked_key_end`` and ``_unmasked_query_range`` say which blocks
    cannot be touched by any of them, and must change with it.
    """
    keep = (om < n_q) & (on < n_k)
    if HAS_KPM:  # each key's causal position (its index, or its valid rank shifted; -1 = padding)
        position = tl.load(kpm_base + on * stride_kpn, mask=on < n_k, other=-1)
        keep = keep & (position >= 0)
        if IS_CAUSAL:  # bottom-right aligned, to the padded or to the valid keys
            keep = keep & (position <= om + (n_k - n_q))
    elif IS_CAUSAL:  # bottom-right aligned
        keep = keep & (on <= om + (n_k - n_q))
    if MASK_KIND == 1:  # boolean, True = attend
        allowed = tl.load(mask_base + om * stride_mm + on * stride_mn, mask=keep, other=0)
        keep = keep & (allowed != 0)
    if MASK_KIND == 2:  # additive, natural-log units
        bias = tl.load(mask_base + om * stride_mm + on * stride_mn, mask=keep, other=0.0)
        s = s + bias.to(tl.float32) / sm_scale  # in raw units: the caller scales once, in one FMA
    return tl.where(keep, s, float("-inf"))


@triton.jit
def _unmasked_key_end(first_row, n_q, n_k, IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr,
                      HAS_KPM: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key blocks ``[0, end)`` that no mask touches for a query block starting at ``first_row``: inside
    ``n_k`` and, causal, at or left of the diagonal of its first row (so of every row). An attention
    mask or key padding can hide any key: then no block is unmasked."""
    end = n_k
    if IS_CAUSAL:
        end = tl.minimum(end, first_row + (n_k - n_q) + 1)
    end = tl.maximum(end, 0) // BLOCK_N * BLOCK_N
    if MASK_KIND != 0 or HAS_KPM:
        end = 0
    return end


@triton.jit
def _sequence_rows(b, CU_ptr, N, IS_VARLEN: tl.constexpr):
    """(first row, length) of sequence ``b`` along one axis: read from the cumulative lengths of a packed
    batch (varlen), or ``(0, N)`` for entry ``b`` of a dense one."""
    if IS_VARLEN:
        start = tl.load(CU_ptr + b).to(tl.int64)
        length = (tl.load(CU_ptr + b + 1) - start).to(tl.int32)
    else:
        start = 0
        length = N
    return start, length


@triton.jit
def _sequence_offset(b, first_row, stride_b, stride_n, IS_VARLEN: tl.constexpr):
    """The offset of sequence ``b``'s first row, in 64 bits (large tensors): batch entry ``b`` of a dense
    tensor, or row ``first_row`` of a packed one (whose batch stride is unused)."""
    if IS_VARLEN:
        offset = first_row * stride_n
    else:
        offset = b.to(tl.int64) * stride_b
    return offset


@triton.jit
def _head_offset(b, first_row, h, stride_b, stride_n, stride_h, IS_VARLEN: tl.constexpr):
    """The offset of row 0 of head ``h`` of sequence ``b`` (see ``_sequence_offset``)."""
    return _sequence_offset(b, first_row, stride_b, stride_n, IS_VARLEN) + h.to(tl.int64) * stride_h


@triton.jit
def _load_tile(base, offs_a, stride_a, limit_a, offs_b, stride_b, limit_b, CHECK_A: tl.constexpr,
               CHECK_B: tl.constexpr):
    """A tile at ``base + offs_a * stride_a + offs_b * stride_b`` (offsets broadcast), bounds-checked
    (zero fill) only along the axes that can run past their limit: interior blocks load unmasked."""
    ptrs = base + offs_a * stride_a + offs_b * stride_b
    if CHECK_A and CHECK_B:
        tile = tl.load(ptrs, mask=(offs_a < limit_a) & (offs_b < limit_b), other=0.0)
    elif CHECK_A:
        tile = tl.load(ptrs, mask=(offs_a < limit_a) & (offs_b >= 0), other=0.0)
    elif CHECK_B:
        tile = tl.load(ptrs, mask=(offs_a >= 0) & (offs_b < limit_b), other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def _store_tile(base, tile, offs_a, stride_a, limit_a, offs_b, stride_b, limit_b):
    """Store ``tile`` at ``base + offs_a * stride_a + offs_b * stride_b`` where both offsets are in bounds,
    rounded to the destination's dtype."""
    tl.store(base + offs_a * stride_a + offs_b * stride_b, tile.to(base.dtype.element_ty),
             mask=(offs_a < limit_a) & (offs_b < limit_b))


@triton.jit
def _kv_descriptors(k_base, stride_kn, v_base, stride_vn, n_k, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, USE_TMA: tl.constexpr, BLOCK_N: tl.constexpr):
    """With USE_TMA, tensor descriptors of this sequence's keys and values, ``(BLOCK_N, BLOCK_D)`` tiles: TMA fills
    rows past ``n_k`` and columns past the head dimension with zeros. Otherwise the bases (unread)."""
    if USE_TMA:
        k_desc = tl.make_tensor_descriptor(k_base, [tl.maximum(n_k, 1), HEAD_DIM], [stride_kn, 1], [BLOCK_N, BLOCK_D])
        v_desc = tl.make_tensor_descriptor(v_base, [tl.maximum(n_k, 1), HEAD_DIM_V], [stride_vn, 1],
                                           [BLOCK_N, BLOCK_DV])
    else:
        k_desc = k_base
        v_desc = v_base
    return k_desc, v_desc


@triton.jit
def _key_side_tile(desc, base, start_n, stride_n, stride_d, n_k, HEAD: tl.constexpr, BLOCK: tl.constexpr,
                   BLOCK_N: tl.constexpr, USE_TMA: tl.constexpr, MASKED: tl.constexpr, TRANSPOSED: tl.constexpr):
    """Rows ``[start_n, start_n + BLOCK_N)`` of K or V, ``(BLOCK_N, BLOCK)`` or, TRANSPOSED, ``(BLOCK, BLOCK_N)``:
    by TMA through ``desc``, or by pointers from ``base``, bounds-checked along N in MASKED blocks only and
    along the head dimension only when the tile pads it."""
    if USE_TMA:
        tile = desc.load([start_n, 0])
        if TRANSPOSED:
            tile = tl.trans(tile)
    else:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK)
        if TRANSPOSED:
            tile = _load_tile(base, offs_n[None, :], stride_n, n_k, offs_d[:, None], stride_d, HEAD, MASKED,
                              BLOCK != HEAD)
        else:
            tile = _load_tile(base, offs_n[:, None], stride_n, n_k, offs_d[None, :], stride_d, HEAD, MASKED,
                              BLOCK != HEAD)
    return tile


@triton.jit
def _fwd_key_blocks(acc, l_i, m_i, q, offs_m, lo, hi, n_q, n_k, qk_scale, sm_scale,
                    k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, k_desc, v_desc,
                    mask_base, stride_mm, stride_mn, kpm_base, stride_kpn,
                    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, HAS_KPM: tl.constexpr,
                    UPCAST_BF16: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
                    BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    """The online softmax over key blocks ``[lo, hi)``; MASKED blocks go through ``_mask_scores``. K and V
    arrive through pointers, or with USE_TMA through the tensor descriptors ``k_desc``/``v_desc`` (TMA on
    sm_90), which fill rows past ``n_k`` and columns past the head dimension with zeros."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_t = _key_side_tile(k_desc, k_base, start_n, stride_kn, stride_kd, n_k, HEAD_DIM, BLOCK_D, BLOCK_N, USE_TMA,
                             MASKED, True)  # (BLOCK_D, BLOCK_N)
        s = _dot(q, k_t, None, UPCAST_BF16, DOT_PRECISION)  # (BLOCK_M, BLOCK_N), raw q.k
        if MASKED:
            s = _mask_scores(s, offs_m[:, None], offs_n[None, :], n_q, n_k, mask_base, stride_mm, stride_mn,
                             kpm_base, stride_kpn, sm_scale, IS_CAUSAL, MASK_KIND, HAS_KPM)
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)  # base-2 units; qk_scale > 0 commutes with max
        m_safe = m_new
        if MASKED:
            # A row that has seen only masked keys keeps m = -inf; subtracting 0 instead keeps exp2 at 0
            # rather than exp2(-inf + inf) = NaN. (Unmasked blocks give every row a finite maximum.)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s * qk_scale - m_safe[:, None])  # scale and shift in one FMA per score
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _key_side_tile(v_desc, v_base, start_n, stride_vn, stride_vd, n_k, HEAD_DIM_V, BLOCK_DV, BLOCK_N, USE_TMA,
                           MASKED, False)  # (BLOCK_N, BLOCK_DV)
        acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], UPCAST_BF16, DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _negated_delta_parts(delta):
    """``(BLOCK_M, 16)`` bfloat16 whose row sums are ``-delta`` exactly: ``-delta`` split into three bfloat16 terms
    (each the rounding of what the ones before it left: 3 x 8 significant bits carry a float32), then zeros.
    Times a ``(16, BLOCK_N)`` tile of ones it is ``-delta`` broadcast over the keys, as one 16-deep tensor-core step
    (see ``DQ_CONFIGS``)."""
    neg = -delta
    hi = neg.to(tl.bfloat16).to(tl.float32)
    mid = (neg - hi).to(tl.bfloat16).to(tl.float32)
    lo = (neg - hi - mid).to(tl.bfloat16).to(tl.float32)
    col = tl.arange(0, 16)[None, :]
    parts = tl.where(col == 0, hi[:, None], tl.where(col == 1, mid[:, None], tl.where(col == 2, lo[:, None], 0.0)))
    return parts.to(tl.bfloat16)


@triton.jit
def _dq_key_blocks(dq, q, do, lse2, delta, offs_m, lo, hi, n_q, n_k, qk_scale, sm_scale,
                   k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, k_desc, v_desc,
                   mask_base, stride_mm, stride_mn, kpm_base, stride_kpn,
                   HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                   IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, HAS_KPM: tl.constexpr,
                   UPCAST_BF16: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
                   BLOCK_N: tl.constexpr, MASKED: tl.constexpr, DELTA_IN_MMA: tl.constexpr):
    """dQ accumulated over key blocks ``[lo, hi)``; MASKED blocks go through ``_mask_scores``. K and V arrive
    as in the forward: through pointers, or with USE_TMA through ``k_desc``/``v_desc``. DELTA_IN_MMA: dP's
    accumulator starts at ``-delta`` (``_negated_delta_parts``) instead of delta being subtracted per score."""
    if DELTA_IN_MMA:
        neg_delta_parts = _negated_delta_parts(delta)
        ones = tl.full([16, BLOCK_N], 1.0, tl.float32).to(tl.bfloat16)  # triton 3.6's interpreter: no bf16 constant
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_t = _key_side_tile(k_desc, k_base, start_n, stride_kn, stride_kd, n_k, HEAD_DIM, BLOCK_D, BLOCK_N, USE_TMA,
                             MASKED, True)  # (BLOCK_D, BLOCK_N)
        s = _dot(q, k_t, None, UPCAST_BF16, DOT_PRECISION)  # (BLOCK_M, BLOCK_N), raw q.k
        if MASKED:
            s = _mask_scores(s, offs_m[:, None], offs_n[None, :], n_q, n_k, mask_base, stride_mm, stride_mn,
                             kpm_base, stride_kpn, sm_scale, IS_CAUSAL, MASK_KIND, HAS_KPM)
        p = tl.math.exp2(s * qk_scale - lse2[:, None])  # the forward's one FMA, with lse for its max
        v_t = _key_side_tile(v_desc, v_base, start_n, stride_vn, stride_vd, n_k, HEAD_DIM_V, BLOCK_DV, BLOCK_N,
                             USE_TMA, MASKED, True)  # (BLOCK_DV, BLOCK_N)
        if DELTA_IN_MMA:  # the accumulator starts at -delta: the tensor cores return dP - delta
            dp_minus_delta = _dot(do, v_t, _dot(neg_delta_parts, ones, None, UPCAST_BF16, DOT_PRECISION),
                                  UPCAST_BF16, DOT_PRECISION)
        else:
            dp_minus_delta = _dot(do, v_t, None, UPCAST_BF16, DOT_PRECISION) - delta[:, None]  # (BLOCK_M, BLOCK_N)
        ds = p * dp_minus_delta
        dq = _dot(ds.to(k_t.dtype), tl.trans(k_t), dq, UPCAST_BF16, DOT_PRECISION)
    return dq


@triton.jit
def _unmasked_query_range(start_n, lo, n_q, n_k, IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr,
                          HAS_KPM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Query blocks ``[first, last)`` (from ``lo`` in steps of BLOCK_M) that no mask touches for the key
    block at ``start_n``: the key block inside ``n_k``, every row inside ``n_q`` and, causal, at or below
    the diagonal of the block's last key. The blocks before ``first`` and from ``last`` on are masked."""
    first = lo
    if IS_CAUSAL:  # the first row that sees the key block's last key
        need = start_n + BLOCK_N - 1 - (n_k - n_q)
        first = lo + (tl.maximum(need - lo, 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    first = tl.minimum(first, n_q)
    last = first + tl.maximum(n_q - first, 0) // BLOCK_M * BLOCK_M
    if start_n + BLOCK_N > n_k:
        first = lo
        last = lo
    if MASK_KIND != 0 or HAS_KPM:
        first = lo
        last = lo
    return first, last


@triton.jit
def _dkdv_query_blocks(dk, dv, k_t, v_t, offs_n, start_a, split, start_b, count, n_q, n_k, qk_scale, sm_scale,
                       q_head, stride_qm, stride_qd, do_head, stride_dom, stride_dod, l_head, d_head, stride_lm,
                       mask_base, stride_mm, stride_mn, kpm_base, stride_kpn,
                       HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_DV: tl.constexpr, IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr,
                       HAS_KPM: tl.constexpr, UPCAST_BF16: tl.constexpr, DOT_PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, MASKED: tl.constexpr):
    """dK and dV accumulated over ``count`` query blocks: the first ``split`` from ``start_a`` on, the rest
    from ``start_b`` on (two runs of blocks in one loop); MASKED blocks go through ``_mask_scores``."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    for i in range(0, count):
        start_m = tl.where(i < split, start_a + i * BLOCK_M, start_b + (i - split) * BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = _load_tile(q_head, offs_m[:, None], stride_qm, n_q, offs_d[None, :], stride_qd, HEAD_DIM,
                       MASKED, BLOCK_D != HEAD_DIM)  # (BLOCK_M, BLOCK_D)
        # The scores in the forward's orientation and order, bit for bit the forward's: at logits ~1e3
        # an ulp of difference between forward and backward scores is a 1e-4 error in every p.
        s = _dot(q, k_t, None, UPCAST_BF16, DOT_PRECISION)  # (BLOCK_M, BLOCK_N), raw q.k
        if MASKED:
            s = _mask_scores(s, offs_m[:, None], offs_n[None, :], n_q, n_k, mask_base, stride_mm, stride_mn,
                             kpm_base, stride_kpn, sm_scale, IS_CAUSAL, MASK_KIND, HAS_KPM)
            lse2 = tl.load(l_head + offs_m * stride_lm, mask=offs_m < n_q, other=0.0)
            lse2 = tl.where(lse2 == float("-inf"), 0.0, lse2)  # fully masked rows: s = -inf gives p = 0
            delta = tl.load(d_head + offs_m * stride_lm, mask=offs_m < n_q, other=0.0)
        else:  # rows inside n_q that see every key of the block: a finite lse
            lse2 = tl.load(l_head + offs_m * stride_lm)
            delta = tl.load(d_head + offs_m * stride_lm)
        p = tl.math.exp2(s * qk_scale - lse2[:, None])  # (BLOCK_M, BLOCK_N), the forward's one FMA
        do = _load_tile(do_head, offs_m[:, None], stride_dom, n_q, offs_dv[None, :], stride_dod, HEAD_DIM_V,
                        MASKED, BLOCK_DV != HEAD_DIM_V)  # (BLOCK_M, BLOCK_DV)
        dv = _dot(tl.trans(p.to(do.dtype)), do, dv, UPCAST_BF16, DOT_PRECISION)
        dp = _dot(do, v_t, None, UPCAST_BF16, DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dk = _dot(tl.trans(ds.to(q.dtype)), q, dk, UPCAST_BF16, DOT_PRECISION)
    return dk, dv


@triton.jit
def _attn_fwd_kernel(
    # pointers (O32: a float32 copy of O for the backward, with O's strides; written only with STORE_O32)
    Q_ptr, K_ptr, V_ptr, O_ptr, O32_ptr, LSE_ptr, MASK_ptr, KPM_ptr, CU_Q_ptr, CU_K_ptr,
    # strides, (B, H, N, D) order for q, k, v, o; (B, H, N) for lse2; (B, H, Nq, Nk) for the mask
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh, stride_lm,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_kpb, stride_kpn,
    # sizes (N_Q, N_K: the lengths, or the maximum lengths of a varlen batch)
    H, GROUPS, N_Q, N_K, sm_scale,
    # meta-parameters
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    UPCAST_BF16: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr, STORE_O32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // GROUPS
    q_start, n_q = _sequence_rows(b, CU_Q_ptr, N_Q, IS_VARLEN)
    k_start, n_k = _sequence_rows(b, CU_K_ptr, N_K, IS_VARLEN)
    q_base = Q_ptr + _head_offset(b, q_start, h, stride_qb, stride_qm, stride_qh, IS_VARLEN)
    k_base = K_ptr + _head_offset(b, k_start, kvh, stride_kb, stride_kn, stride_kh, IS_VARLEN)
    v_base = V_ptr + _head_offset(b, k_start, kvh, stride_vb, stride_vn, stride_vh, IS_VARLEN)
    o_offset = _head_offset(b, q_start, h, stride_ob, stride_om, stride_oh, IS_VARLEN)  # O and its float32 copy
    l_base = LSE_ptr + _head_offset(b, q_start, h, stride_lb, stride_lm, stride_lh, IS_VARLEN)
    mask_base = MASK_ptr + b.to(tl.int64) * stride_mb + h.to(tl.int64) * stride_mh
    kpm_base = KPM_ptr + b.to(tl.int64) * stride_kpb

    if pid_m * BLOCK_M < n_q:
        k_desc, v_desc = _kv_descriptors(k_base, stride_kn, v_base, stride_vn, n_k, HEAD_DIM, HEAD_DIM_V, BLOCK_D,
                                         BLOCK_DV, USE_TMA, BLOCK_N)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_dv = tl.arange(0, BLOCK_DV)
        row_ok = offs_m < n_q
        q = _load_tile(q_base, offs_m[:, None], stride_qm, n_q, offs_d[None, :], stride_qd, HEAD_DIM,
                       True, BLOCK_D != HEAD_DIM)  # (BLOCK_M, BLOCK_D)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max, base-2 units
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s - m_i)
        acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
        qk_scale = sm_scale * _LOG2E
        hi = n_k
        if IS_CAUSAL:  # keys past the last query's diagonal are never attended by this block
            hi = tl.maximum(tl.minimum(n_k, (pid_m + 1) * BLOCK_M + n_k - n_q), 0)
        # Interior key blocks first, with no mask at all; then the boundary and diagonal ones, masked.
        interior_end = tl.minimum(_unmasked_key_end(pid_m * BLOCK_M, n_q, n_k, IS_CAUSAL, MASK_KIND, HAS_KPM,
                                                    BLOCK_N), hi)
        if MASK_KIND == 0 and not HAS_KPM:  # a mask leaves no block unmasked: the loop is not even compiled
            acc, l_i, m_i = _fwd_key_blocks(acc, l_i, m_i, q, offs_m, 0, interior_end, n_q, n_k, qk_scale, sm_scale,
                                            k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd,
                                            k_desc, v_desc, mask_base, stride_mm, stride_mn, kpm_base,
                                            stride_kpn, HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, IS_CAUSAL,
                                            MASK_KIND, HAS_KPM, UPCAST_BF16, DOT_PRECISION, USE_TMA, BLOCK_N, False)
        acc, l_i, m_i = _fwd_key_blocks(acc, l_i, m_i, q, offs_m, interior_end, hi, n_q, n_k, qk_scale, sm_scale,
                                        k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd,
                                        k_desc, v_desc, mask_base, stride_mm, stride_mn, kpm_base,
                                        stride_kpn, HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, IS_CAUSAL,
                                        MASK_KIND, HAS_KPM, UPCAST_BF16, DOT_PRECISION, USE_TMA, BLOCK_N, True)

        empty = l_i == 0.0  # fully masked rows: zeros and lse = -inf
        l_safe = tl.where(empty, 1.0, l_i)
        out = acc / l_safe[:, None]
        lse2 = tl.where(empty, float("-inf"), m_i + tl.math.log2(l_safe))  # base 2: lse * log2(e)
        o_tile = o_offset + offs_m[:, None] * stride_om + offs_dv[None, :] * stride_od
        o_ok = row_ok[:, None] & (offs_dv[None, :] < HEAD_DIM_V)
        tl.store(O_ptr + o_tile, out.to(O_ptr.dtype.element_ty), mask=o_ok)  # O once, in its dtype
        if STORE_O32:  # training in 16 bits: the backward's delta reads O before its rounding (_FlashAttention)
            tl.store(O32_ptr + o_tile, out, mask=o_ok)
        tl.store(l_base + offs_m * stride_lm, lse2, mask=row_ok)


@triton.jit
def _attn_bwd_delta_kernel(
    O_ptr, DO_ptr, DELTA_ptr, CU_Q_ptr,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_lb, stride_lh, stride_lm,
    H, N_Q,
    HEAD_DIM_V: tl.constexpr, BLOCK_DV: tl.constexpr, IS_VARLEN: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """delta = rowsum(dO * O), the softmax-backward correction, per query row (float32)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    q_start, n_q = _sequence_rows(b, CU_Q_ptr, N_Q, IS_VARLEN)
    o_base = O_ptr + _head_offset(b, q_start, h, stride_ob, stride_om, stride_oh, IS_VARLEN)
    do_base = DO_ptr + _head_offset(b, q_start, h, stride_dob, stride_dom, stride_doh, IS_VARLEN)
    l_base = DELTA_ptr + _head_offset(b, q_start, h, stride_lb, stride_lm, stride_lh, IS_VARLEN)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    o = _load_tile(o_base, offs_m[:, None], stride_om, n_q, offs_dv[None, :], stride_od, HEAD_DIM_V,
                   True, BLOCK_DV != HEAD_DIM_V)
    do = _load_tile(do_base, offs_m[:, None], stride_dom, n_q, offs_dv[None, :], stride_dod, HEAD_DIM_V,
                    True, BLOCK_DV != HEAD_DIM_V)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(l_base + offs_m * stride_lm, delta, mask=offs_m < n_q)


@triton.jit
def _attn_bwd_dkdv_kernel(
    # pointers
    Q_ptr, K_ptr, V_ptr, DO_ptr, LSE_ptr, DELTA_ptr, DK_ptr, DV_ptr, MASK_ptr, KPM_ptr, CU_Q_ptr, CU_K_ptr,
    # strides
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_lb, stride_lh, stride_lm,  # lse and delta share one layout
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_kpb, stride_kpn,
    # sizes
    H_KV, GROUPS, N_Q, N_K, sm_scale,
    # meta-parameters
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    UPCAST_BF16: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dK and dV of one key block of one key/value head, summed over the GROUPS query heads that read it."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H_KV
    kvh = pid_bh % H_KV
    q_start, n_q = _sequence_rows(b, CU_Q_ptr, N_Q, IS_VARLEN)
    k_start, n_k = _sequence_rows(b, CU_K_ptr, N_K, IS_VARLEN)
    k_base = K_ptr + _head_offset(b, k_start, kvh, stride_kb, stride_kn, stride_kh, IS_VARLEN)
    v_base = V_ptr + _head_offset(b, k_start, kvh, stride_vb, stride_vn, stride_vh, IS_VARLEN)
    dk_base = DK_ptr + _head_offset(b, k_start, kvh, stride_dkb, stride_dkn, stride_dkh, IS_VARLEN)
    dv_base = DV_ptr + _head_offset(b, k_start, kvh, stride_dvb, stride_dvn, stride_dvh, IS_VARLEN)
    # the query side at head 0: the loop over the group's query heads adds each head's stride
    q_base = Q_ptr + _sequence_offset(b, q_start, stride_qb, stride_qm, IS_VARLEN)
    do_base = DO_ptr + _sequence_offset(b, q_start, stride_dob, stride_dom, IS_VARLEN)
    l_base = LSE_ptr + _sequence_offset(b, q_start, stride_lb, stride_lm, IS_VARLEN)
    d_base = DELTA_ptr + _sequence_offset(b, q_start, stride_lb, stride_lm, IS_VARLEN)
    kpm_base = KPM_ptr + b.to(tl.int64) * stride_kpb

    if pid_n * BLOCK_N < n_k:
        start_n = pid_n * BLOCK_N
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        offs_dv = tl.arange(0, BLOCK_DV)
        k_t = _load_tile(k_base, offs_n[None, :], stride_kn, n_k, offs_d[:, None], stride_kd, HEAD_DIM,
                         True, BLOCK_D != HEAD_DIM)  # (BLOCK_D, BLOCK_N)
        v_t = _load_tile(v_base, offs_n[None, :], stride_vn, n_k, offs_dv[:, None], stride_vd, HEAD_DIM_V,
                         True, BLOCK_DV != HEAD_DIM_V)  # (BLOCK_DV, BLOCK_N)
        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
        qk_scale = sm_scale * _LOG2E
        lo = 0
        if IS_CAUSAL:  # queries before this block's first key (shifted by Nk - Nq) never see it
            lo = tl.maximum(start_n - (n_k - n_q), 0) // BLOCK_M * BLOCK_M
        for g in range(0, GROUPS):
            h = kvh * GROUPS + g
            q_head = q_base + h.to(tl.int64) * stride_qh
            do_head = do_base + h.to(tl.int64) * stride_doh
            l_head = l_base + h.to(tl.int64) * stride_lh
            d_head = d_base + h.to(tl.int64) * stride_lh
            mask_base = MASK_ptr + b.to(tl.int64) * stride_mb + h.to(tl.int64) * stride_mh
            first, last = _unmasked_query_range(start_n, lo, n_q, n_k, IS_CAUSAL, MASK_KIND, HAS_KPM, BLOCK_M,
                                                BLOCK_N)
            # Unmasked interior blocks [first, last); then one masked loop over the diagonal blocks [lo, first)
            # and the last partial block [last, n_q) (one loop, not two: the code, and its registers, once).
            n_diagonal = (first - lo + BLOCK_M - 1) // BLOCK_M
            n_tail = (n_q - last + BLOCK_M - 1) // BLOCK_M
            if MASK_KIND == 0 and not HAS_KPM:  # as in the forward
                n_interior = (last - first) // BLOCK_M
                dk, dv = _dkdv_query_blocks(dk, dv, k_t, v_t, offs_n, first, n_interior, last, n_interior, n_q, n_k,
                                            qk_scale, sm_scale, q_head, stride_qm, stride_qd, do_head, stride_dom,
                                            stride_dod, l_head, d_head, stride_lm, mask_base, stride_mm, stride_mn,
                                            kpm_base, stride_kpn, HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, IS_CAUSAL,
                                            MASK_KIND, HAS_KPM, UPCAST_BF16, DOT_PRECISION, BLOCK_M, False)
            dk, dv = _dkdv_query_blocks(dk, dv, k_t, v_t, offs_n, lo, n_diagonal, last, n_diagonal + n_tail, n_q,
                                        n_k, qk_scale, sm_scale, q_head, stride_qm, stride_qd, do_head, stride_dom,
                                        stride_dod, l_head, d_head, stride_lm, mask_base, stride_mm, stride_mn,
                                        kpm_base, stride_kpn, HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, IS_CAUSAL,
                                        MASK_KIND, HAS_KPM, UPCAST_BF16, DOT_PRECISION, BLOCK_M, True)
        dk = dk * sm_scale
        _store_tile(dk_base, dk, offs_n[:, None], stride_dkn, n_k, offs_d[None, :], stride_dkd, HEAD_DIM)
        _store_tile(dv_base, dv, offs_n[:, None], stride_dvn, n_k, offs_dv[None, :], stride_dvd, HEAD_DIM_V)


@triton.jit
def _attn_bwd_dq_kernel(
    # pointers
    Q_ptr, K_ptr, V_ptr, DO_ptr, LSE_ptr, DELTA_ptr, DQ_ptr, MASK_ptr, KPM_ptr, CU_Q_ptr, CU_K_ptr,
    # strides
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    stride_lb, stride_lh, stride_lm,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_kpb, stride_kpn,
    # sizes
    H, GROUPS, N_Q, N_K, sm_scale,
    # meta-parameters
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    UPCAST_BF16: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DELTA_IN_MMA: tl.constexpr = False,
):
    """dQ of one query block of one query head, accumulated over its key blocks."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // GROUPS
    q_start, n_q = _sequence_rows(b, CU_Q_ptr, N_Q, IS_VARLEN)
    k_start, n_k = _sequence_rows(b, CU_K_ptr, N_K, IS_VARLEN)
    q_base = Q_ptr + _head_offset(b, q_start, h, stride_qb, stride_qm, stride_qh, IS_VARLEN)
    do_base = DO_ptr + _head_offset(b, q_start, h, stride_dob, stride_dom, stride_doh, IS_VARLEN)
    dq_base = DQ_ptr + _head_offset(b, q_start, h, stride_dqb, stride_dqm, stride_dqh, IS_VARLEN)
    l_base = LSE_ptr + _head_offset(b, q_start, h, stride_lb, stride_lm, stride_lh, IS_VARLEN)
    d_base = DELTA_ptr + _head_offset(b, q_start, h, stride_lb, stride_lm, stride_lh, IS_VARLEN)
    k_base = K_ptr + _head_offset(b, k_start, kvh, stride_kb, stride_kn, stride_kh, IS_VARLEN)
    v_base = V_ptr + _head_offset(b, k_start, kvh, stride_vb, stride_vn, stride_vh, IS_VARLEN)
    mask_base = MASK_ptr + b.to(tl.int64) * stride_mb + h.to(tl.int64) * stride_mh
    kpm_base = KPM_ptr + b.to(tl.int64) * stride_kpb

    if pid_m * BLOCK_M < n_q:
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_dv = tl.arange(0, BLOCK_DV)
        row_ok = offs_m < n_q
        q = _load_tile(q_base, offs_m[:, None], stride_qm, n_q, offs_d[None, :], stride_qd, HEAD_DIM,
                       True, BLOCK_D != HEAD_DIM)  # (BLOCK_M, BLOCK_D)
        do = _load_tile(do_base, offs_m[:, None], stride_dom, n_q, offs_dv[None, :], stride_dod, HEAD_DIM_V,
                        True, BLOCK_DV != HEAD_DIM_V)  # (BLOCK_M, BLOCK_DV)
        lse2 = tl.load(l_base + offs_m * stride_lm, mask=row_ok, other=0.0)
        lse2 = tl.where(lse2 == float("-inf"), 0.0, lse2)
        delta = tl.load(d_base + offs_m * stride_lm, mask=row_ok, other=0.0)
        dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        qk_scale = sm_scale * _LOG2E
        delta_in_mma: tl.constexpr = DELTA_IN_MMA and DO_ptr.dtype.element_ty == tl.bfloat16  # see DQ_CONFIGS
        k_desc, v_desc = _kv_descriptors(k_base, stride_kn, v_base, stride_vn, n_k, HEAD_DIM, HEAD_DIM_V, BLOCK_D,
                                         BLOCK_DV, USE_TMA, BLOCK_N)
        hi = n_k
        if IS_CAUSAL:
            hi = tl.maximum(tl.minimum(n_k, (pid_m + 1) * BLOCK_M + n_k - n_q), 0)
        interior_end = tl.minimum(_unmasked_key_end(pid_m * BLOCK_M, n_q, n_k, IS_CAUSAL, MASK_KIND, HAS_KPM,
                                                    BLOCK_N), hi)
        if MASK_KIND == 0 and not HAS_KPM:  # as in the forward
            dq = _dq_key_blocks(dq, q, do, lse2, delta, offs_m, 0, interior_end, n_q, n_k, qk_scale, sm_scale,
                                k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, k_desc, v_desc,
                                mask_base, stride_mm, stride_mn, kpm_base, stride_kpn,
                                HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, IS_CAUSAL, MASK_KIND, HAS_KPM,
                                UPCAST_BF16, DOT_PRECISION, USE_TMA, BLOCK_N, False, delta_in_mma)
        dq = _dq_key_blocks(dq, q, do, lse2, delta, offs_m, interior_end, hi, n_q, n_k, qk_scale, sm_scale,
                            k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, k_desc, v_desc,
                            mask_base, stride_mm, stride_mn, kpm_base, stride_kpn,
                            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, IS_CAUSAL, MASK_KIND, HAS_KPM,
                            UPCAST_BF16, DOT_PRECISION, USE_TMA, BLOCK_N, True, delta_in_mma)
        dq = dq * sm_scale
        _store_tile(dq_base, dq, offs_m[:, None], stride_dqm, n_q, offs_d[None, :], stride_dqd, HEAD_DIM)


# The interpreter decision, taken by triton when it decorated the kernels above (TRITON_INTERPRET at import).
_INTERPRETING = isinstance(_attn_fwd_kernel, InterpretedFunction)
# The bf16 shim of the docstring: True only when the kernels are interpreted, never for compiled code.
_INTERPRETER_BF16_UPCAST = _INTERPRETING


def _autotuned(kernel, configs, key, name):
    # Under the interpreter a single small config: triton.autotune never times a lone config.
    chosen = [_INTERPRETER_CONFIG] if _INTERPRETING else configs
    prune = None if _INTERPRETING else {"early_config_prune": _pruner(name)}
    return triton.autotune(configs=chosen, key=key, prune_configs_by=prune)(kernel)


_attn_fwd = _autotuned(_attn_fwd_kernel, FWD_CONFIGS, _KEY_WITH_TMA, "forward")
_attn_bwd_dkdv = _autotuned(_attn_bwd_dkdv_kernel, DKDV_CONFIGS, _DKDV_KEY, "dkdv")
_attn_bwd_dq = _autotuned(_attn_bwd_dq_kernel, DQ_CONFIGS, _KEY_WITH_TMA, "dq")
_DELTA_BLOCK_M = 16 if _INTERPRETING else 64  # a plain kernel: a row sum, memory bound


# --------------------------------------------------------------------------------------------------
# Compile specifications: every shipped configuration, compilable with no GPU (fusebench inspect)
# --------------------------------------------------------------------------------------------------

_SHIPPED_CAPABILITIES = (80, 90, 100, 120)  # what `fusebench inspect` compiles for
_INT_ARGS = ("H", "H_KV", "GROUPS", "N_Q", "N_K")
# The constexprs a call decides (``_meta`` and the forward's O copy): a report row takes them from the launch
# it stands for, so a causal and a plain launch of one configuration are two rows.
_LAUNCH_FLAGS = ("IS_CAUSAL", "HAS_KPM", "IS_VARLEN", "STORE_O32")
# A mask's kind is part of a configuration instead (a launch key): the pruner keeps other tiles for masked launches.
_MASK_KINDS = ((0, ""), (1, " bool-mask"), (2, " float-mask"))


def _compile_spec(kernel: str, fn, dtype: torch.dtype, constexprs: dict, num_warps: int, num_stages: int,
                  label: str, launch_keys: tuple[str, ...], targets: tuple[int, ...] | None = None) -> CompileSpec:
    """One configuration of ``fn`` in ``dtype``; the launches it serves (``launch_keys``: same dtype, head
    dimensions and, for the forward, path) decide which arguments compile as divisible by 16 or as the constant
    1, and the call's flags (:data:`_LAUNCH_FLAGS`), see ``CompileSpec.for_launch``."""
    # the float32 side outputs and int32 index vectors; the delta kernel reads the float32 O the forward keeps
    fp32_o = {"O_ptr": "*fp32"} if kernel == "attention.bwd_delta" else {}
    types = {**fp32_o, "LSE_ptr": "*fp32", "DELTA_ptr": "*fp32", "O32_ptr": "*fp32", "CU_Q_ptr": "*i32",
             "CU_K_ptr": "*i32", "KPM_ptr": "*i32", "*_ptr": f"*{TRITON_DTYPE[dtype]}", "stride_*": "i32",
             **{name: "i32" for name in _INT_ARGS}, "sm_scale": "fp32"}
    return spec_for(kernel, fn, constexprs, types, num_warps=num_warps, num_stages=num_stages,
                    config=label, launch_keys=launch_keys,
                    launch_constexprs=tuple(flag for flag in _LAUNCH_FLAGS if flag in constexprs),
                    expects_tensor_cores=kernel != "attention.bwd_delta", targets=targets,
                    expects_tma=bool(constexprs.get("USE_TMA")))


def compile_specs() -> list[CompileSpec]:
    """Every (kernel, shipped configuration that fits) for head dimensions 64, 128 and 256 in float16 and
    bfloat16, the interpreter shim off (``UPCAST_BF16=False``): these are what a GPU runs. The call's flags
    (causal, key padding, varlen, the float32 O copy) are the launches' (:data:`_LAUNCH_FLAGS`): a configuration
    is compiled once per combination of them, and of argument alignment, that the catalog launches. A mask's
    kind is a configuration's own (``... float-mask``): masked launches prune other tiles (``_fits``)."""
    specs = []
    kernels = (("forward", _attn_fwd_kernel, FWD_CONFIGS), ("dkdv", _attn_bwd_dkdv_kernel, DKDV_CONFIGS),
               ("dq", _attn_bwd_dq_kernel, DQ_CONFIGS))
    cases = ((torch.float16, 64), (torch.bfloat16, 64), (torch.float16, 128), (torch.bfloat16, 128),
             (torch.bfloat16, 256))
    for dtype, head_dim in cases:
        # the flags' values here only stand in until a launch gives its own (CompileSpec.for_launch)
        flags = dict(HEAD_DIM=head_dim, HEAD_DIM_V=head_dim, BLOCK_D=head_dim, BLOCK_DV=head_dim, IS_CAUSAL=False,
                     MASK_KIND=0, HAS_KPM=False, IS_VARLEN=False, UPCAST_BF16=False, DOT_PRECISION="tf32")
        for name, fn, configs in kernels:
            for config, (mask_kind, mask_text) in itertools.product(configs, _MASK_KINDS):
                if not _serves_dtype(config, dtype):
                    continue
                masked = mask_kind != 0  # a mask tile per score tile: its own measured spills (_MASKED_SPILLS)
                targets = tuple(c for c in _SHIPPED_CAPABILITIES if _fits(config, head_dim, name, c, masked=masked))
                with_tma = name in ("forward", "dq") and _fits(config, head_dim, name, 90, tma=True, masked=masked)
                if not targets and not with_tma:
                    continue
                bm, bn = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
                label = (f"{TRITON_DTYPE[dtype]} D{head_dim} M{bm} N{bn} w{config.num_warps} s{config.num_stages}"
                         f"{' delta-mma' if config.kwargs.get('DELTA_IN_MMA') else ''}{mask_text}")
                kernel_flags = flags | config.kwargs | dict(MASK_KIND=mask_kind)
                # the launches of this dtype, head dimension and mask kind
                keys = ("Q_ptr", "HEAD_DIM", "HEAD_DIM_V", "MASK_KIND")
                if name in ("forward", "dq"):  # the pointer path (every target) and, on sm_90, the TMA path
                    kernel_flags |= dict(USE_TMA=False) | (dict(STORE_O32=False) if name == "forward" else {})
                    keys += ("USE_TMA",)
                    if with_tma:
                        specs.append(_compile_spec(f"attention.{name}", fn, dtype, kernel_flags | dict(USE_TMA=True),
                                                   config.num_warps, config.num_stages, f"{label} tma", keys,
                                                   targets=(90,)))
                if not targets:  # the TMA path alone fits
                    continue
                spec = _compile_spec(f"attention.{name}", fn, dtype, kernel_flags, config.num_warps,
                                     config.num_stages, label, keys)
                specs.append(spec if targets == _SHIPPED_CAPABILITIES else dataclasses.replace(spec, targets=targets))
        specs.append(_compile_spec("attention.bwd_delta", _attn_bwd_delta_kernel, dtype,
                                   dict(HEAD_DIM_V=head_dim, BLOCK_DV=head_dim, IS_VARLEN=False, BLOCK_M=64),
                                   4, 1, f"{TRITON_DTYPE[dtype]} D{head_dim} M64 w4", ("DO_ptr", "HEAD_DIM_V")))
    return specs


# --------------------------------------------------------------------------------------------------
# Launchers: check inputs, allocate, launch
# --------------------------------------------------------------------------------------------------


def _block(dim: int) -> int:
    """The padded tile width of a head dimension: a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(dim))


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32 (the kernel accumulates in float32), "
                        f"got {t.dtype}")
    if not _INTERPRETING and t.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor (the Triton kernel compiles for GPUs), got device "
                         f"{t.device}; set TRITON_INTERPRET=1 before importing kernels.attention to emulate it "
                         "on the CPU")


def _check_qkv(q, k, v, *, rank: int, shape_text: str, head_axis: int) -> None:
    """dtype, device, rank, heads and head dimensions of q, k, v (rank 4 dense, rank 3 packed varlen)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t)
        if t.dim() != rank:
            raise ValueError(f"{name} must have shape {shape_text}, got rank {t.dim()} shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"k and v must agree in every dimension but the last, got k {tuple(k.shape)} and "
                         f"v {tuple(v.shape)}")
    if rank == 4 and k.shape[0] != q.shape[0]:
        raise ValueError(f"k must have the batch size of q ({q.shape[0]}), got {k.shape[0]}")
    hq, hkv = q.shape[head_axis], k.shape[head_axis]
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"the heads of q ({hq}) must be a multiple of the heads of k and v ({hkv})")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have the head dimension of q ({q.shape[-1]}), got {k.shape[-1]}")
    for name, t in (("q", q), ("v", v)):
        if not 1 <= t.shape[-1] <= MAX_HEAD_DIM:
            raise ValueError(f"the head dimension of {name} must be between 1 and {MAX_HEAD_DIM}, got {t.shape[-1]}")


def _check_masks(q4, k4, attn_mask, key_padding_mask) -> None:
    """Masks against the (B, Hq, Nq, D) / (B, Hkv, Nk, D) views: the reference's rules, then the kernel's own
    (the masks on q's device; no gradient for attn_mask)."""
    validate_masks(attn_mask, key_padding_mask, (*q4.shape[:3], k4.shape[2]))
    for name, mask in (("attn_mask", attn_mask), ("key_padding_mask", key_padding_mask)):
        if mask is not None and mask.device != q4.device:
            raise ValueError(f"{name} must be on the device of q ({q4.device}), got {mask.device}")
    if attn_mask is not None and attn_mask.requires_grad:
        raise NotImplementedError("the triton attention backend has no gradient for attn_mask; detach it")


def _empty_like_layout(t: torch.Tensor, last: int, dtype: torch.dtype) -> torch.Tensor:
    """A new (B, H, N, last) tensor whose memory orders B, H, N like ``t``'s (a (B, N, H, D) input gets a
    (B, N, H, last) buffer), so outputs and gradients keep the caller's layout."""
    order = sorted(range(3), key=lambda i: -t.stride(i))  # outer dimensions, largest stride first
    shape = [t.shape[i] for i in order] + [last]
    buffer = torch.empty(shape, dtype=dtype, device=t.device)
    inverse = [order.index(i) for i in range(3)] + [3]
    return buffer.permute(inverse)


@dataclass(frozen=True)
class _Problem:
    """One attention call in kernel terms: (B, H, N, D) views of any strides and the flags of the kernels."""

    batch: int  # sequences: B, or the number of packed sequences of a varlen batch
    n_q: int  # query length (varlen: the longest sequence)
    n_k: int
    causal: bool
    scale: float
    cu_q: torch.Tensor | None
    cu_k: torch.Tensor | None
    causal_alignment: str = "padded"  # with causal and a key padding mask: reference.attention's meaning


def _mask_views(q4, attn_mask, key_padding_mask, batch, n_q, n_k, causal_alignment="padded"):
    """The mask pointers, strides and flags: broadcast dimensions get stride 0 (expand is a view); the
    padding mask becomes int32 key positions for the causal test (``key_causal_positions``)."""
    hq = q4.shape[1]
    if attn_mask is None:
        mask, mask_strides, kind = q4, (0, 0, 0, 0), 0
    else:
        expanded = attn_mask.expand(batch, hq, n_q, n_k)  # a view, no copy
        kind = 1 if attn_mask.dtype == torch.bool else 2
        mask = expanded.view(torch.uint8) if kind == 1 else expanded
        mask_strides = expanded.stride()
    if key_padding_mask is None:
        kpm, kpm_strides = q4, (0, 0)
    else:
        kpm = key_causal_positions(key_padding_mask, causal_alignment).to(torch.int32)  # (B, Nk), -1 = padding
        kpm_strides = kpm.stride()
    return mask, mask_strides, kind, kpm, kpm_strides


def _meta(q4, v4, problem: _Problem, mask_kind: int, has_kpm: bool) -> dict:
    return dict(
        HEAD_DIM=q4.shape[-1], HEAD_DIM_V=v4.shape[-1], BLOCK_D=_block(q4.shape[-1]), BLOCK_DV=_block(v4.shape[-1]),
        IS_CAUSAL=problem.causal, MASK_KIND=mask_kind, HAS_KPM=has_kpm, IS_VARLEN=problem.cu_q is not None,
        UPCAST_BF16=_INTERPRETER_BF16_UPCAST and q4.dtype == torch.bfloat16,
        DOT_PRECISION="ieee" if q4.dtype == torch.float32 else "tf32",
    )


def _tma_available(device: torch.device) -> bool:
    """Whether the forward and dQ may read K and V by TMA here: compiled for a Hopper GPU (sm_90). Other GPUs, and
    the interpreter, take the pointer path (tests force this to True to interpret the TMA path's logic)."""
    return not _INTERPRETING and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def _kv_by_tma(k4, v4) -> bool:
    """Whether the forward and dQ read K and V by TMA: on sm_90, 16-bit elements, a 16-byte aligned base and
    strides (the last one 1), as tensor descriptors require; everything else takes the pointer path."""
    return (_tma_available(k4.device) and k4.dtype in (torch.float16, torch.bfloat16)
            and all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0
                    and all(stride * t.element_size() % 16 == 0 for stride in t.stride()[:-1]) for t in (k4, v4)))


def _tma_scratch(size: int, alignment: int, stream):
    """Global memory where the TMA path's programs write their tensor descriptors (triton asks at launch)."""
    return torch.empty(size, dtype=torch.int8, device=torch.device("cuda", torch.cuda.current_device()))


def _forward(q4, k4, v4, attn_mask, key_padding_mask, problem: _Problem, *, out=None, lse=None, out32=None):
    """Launch the forward kernel: returns (out (B, Hq, Nq, Dv) in q's layout, lse2 (B, Hq, Nq) float32); with
    ``out32`` (float32, ``out``'s strides) the same kernel also writes O there unrounded, for the backward.

    ``lse2`` is the log-sum-exp in base 2 (``lse * log2(e)``), what the backward kernels read: converting
    to natural units and back would round a value of magnitude ~|scores| twice.

    ``out``/``lse`` may be given (any strides; the tests pass views inside guard zones)."""
    hq, hkv = q4.shape[1], k4.shape[1]
    out = _empty_like_layout(q4, v4.shape[-1], q4.dtype) if out is None else out
    lse = torch.empty(q4.shape[:3], dtype=torch.float32, device=q4.device) if lse is None else lse
    if out32 is not None and (out32.shape, out32.stride()) != (out.shape, out.stride()):
        raise ValueError("out32 must have the shape and strides of out (the kernel writes both with out's strides)")
    if out.numel() == 0 and lse.numel() == 0:
        return out, lse
    mask, mask_strides, kind, kpm, kpm_strides = _mask_views(q4, attn_mask, key_padding_mask, problem.batch,
                                                             problem.n_q, problem.n_k, problem.causal_alignment)
    cu_q = problem.cu_q if problem.cu_q is not None else lse
    cu_k = problem.cu_k if problem.cu_k is not None else lse

    use_tma = _kv_by_tma(k4, v4)

    def grid(meta):
        return (triton.cdiv(problem.n_q, meta["BLOCK_M"]), problem.batch * hq)

    # The TMA path's descriptors need scratch memory: an allocator for this launch only, the caller's kept.
    token = _triton_allocation._allocator.set(_tma_scratch) if use_tma else None
    try:
        _attn_fwd[grid](
            q4, k4, v4, out, out if out32 is None else out32, lse, mask, kpm, cu_q, cu_k,
            *q4.stride(), *k4.stride(), *v4.stride(), *out.stride(), *lse.stride(), *mask_strides, *kpm_strides,
            hq, hq // hkv, problem.n_q, problem.n_k, problem.scale,
            **_meta(q4, v4, problem, kind, key_padding_mask is not None), USE_TMA=use_tma,
            STORE_O32=out32 is not None,
        )
    finally:
        if token is not None:
            _triton_allocation._allocator.reset(token)
    return out, lse


def _backward(do4, q4, k4, v4, out, lse, attn_mask, key_padding_mask, problem: _Problem, *, dq=None, dk=None,
              dv=None):
    """Launch the delta pre-pass, then the dK/dV and dQ kernels: returns (dq, dk, dv) in the inputs' layouts."""
    hq, hkv = q4.shape[1], k4.shape[1]
    dq = _empty_like_layout(q4, q4.shape[-1], q4.dtype) if dq is None else dq
    dk = _empty_like_layout(k4, k4.shape[-1], k4.dtype) if dk is None else dk
    dv = _empty_like_layout(v4, v4.shape[-1], v4.dtype) if dv is None else dv
    if problem.n_q == 0 or problem.batch * hq == 0:  # no query: nothing flows back to the keys
        dk.zero_()
        dv.zero_()
        return dq, dk, dv
    delta = torch.empty_like(lse)
    mask, mask_strides, kind, kpm, kpm_strides = _mask_views(q4, attn_mask, key_padding_mask, problem.batch,
                                                             problem.n_q, problem.n_k, problem.causal_alignment)
    cu_q = problem.cu_q if problem.cu_q is not None else lse
    cu_k = problem.cu_k if problem.cu_k is not None else lse
    meta = _meta(q4, v4, problem, kind, key_padding_mask is not None)

    _attn_bwd_delta_kernel[(triton.cdiv(problem.n_q, _DELTA_BLOCK_M), problem.batch * hq)](
        out, do4, delta, cu_q, *out.stride(), *do4.stride(), *delta.stride(), hq, problem.n_q,
        HEAD_DIM_V=meta["HEAD_DIM_V"], BLOCK_DV=meta["BLOCK_DV"], IS_VARLEN=meta["IS_VARLEN"],
        BLOCK_M=_DELTA_BLOCK_M,
    )
    if problem.n_k > 0:
        _attn_bwd_dkdv[lambda m: (triton.cdiv(problem.n_k, m["BLOCK_N"]), problem.batch * hkv)](
            q4, k4, v4, do4, lse, delta, dk, dv, mask, kpm, cu_q, cu_k,
            *q4.stride(), *k4.stride(), *v4.stride(), *do4.stride(), *dk.stride(), *dv.stride(), *lse.stride(),
            *mask_strides, *kpm_strides,
            hkv, hq // hkv, problem.n_q, problem.n_k, problem.scale, **meta,
        )
    use_tma = _kv_by_tma(k4, v4)  # dQ reads K and V as the forward does
    token = _triton_allocation._allocator.set(_tma_scratch) if use_tma else None
    try:
        _attn_bwd_dq[lambda m: (triton.cdiv(problem.n_q, m["BLOCK_M"]), problem.batch * hq)](
            q4, k4, v4, do4, lse, delta, dq, mask, kpm, cu_q, cu_k,
            *q4.stride(), *k4.stride(), *v4.stride(), *do4.stride(), *dq.stride(), *lse.stride(),
            *mask_strides, *kpm_strides,
            hq, hq // hkv, problem.n_q, problem.n_k, problem.scale, **meta, USE_TMA=use_tma,
        )
    finally:
        if token is not None:
            _triton_allocation._allocator.reset(token)
    return dq, dk, dv


# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class _FlashAttention(torch.autograd.Function):
    """Forward saves (q, k, v, O, lse), O in float32 when gradients are needed; backward recomputes the
    probabilities from lse."""

    @staticmethod
    def forward(ctx, q4, k4, v4, attn_mask, key_padding_mask, problem: _Problem):
        out = _empty_like_layout(q4, v4.shape[-1], q4.dtype)
        out32 = None
        if any(ctx.needs_input_grad[:3]) and q4.dtype != torch.float32:
            # The backward's delta = rowsum(dO * O) must see O before it is rounded to float16/bfloat16: with a
            # peaked softmax (scores ~1e3) the true gradient nearly cancels (dP_j - delta ~ 0 for the winning key)
            # and O's rounding, ~|O| * 2^-8 in bfloat16, survives as an error far above the gradient itself
            # (test_large_logits_do_not_overflow fails on about one seed in six with a rounded O). The forward
            # kernel writes O in its dtype for the caller and, in the same epilogue, unrounded for the backward.
            out32 = torch.empty_strided(out.shape, out.stride(), dtype=torch.float32, device=out.device)
        out, lse = _forward(q4, k4, v4, attn_mask, key_padding_mask, problem, out=out, out32=out32)
        ctx.save_for_backward(q4, k4, v4, out if out32 is None else out32, lse, attn_mask, key_padding_mask)
        ctx.problem = problem
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, d_out, _d_lse):
        q4, k4, v4, out, lse, attn_mask, key_padding_mask = ctx.saved_tensors
        dq, dk, dv = _backward(d_out, q4, k4, v4, out, lse, attn_mask, key_padding_mask, ctx.problem)
        return dq, dk, dv, None, None, None


# --------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------


def _natural(lse2: torch.Tensor) -> torch.Tensor:
    """The base-2 log-sum-exp the kernels keep, in natural units, float32 (as the reference and flash-attn)."""
    return lse2 * math.log(2.0)


def _default_scale(scale, head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def attention(q, k, v, *, is_causal: bool = False, scale: float | None = None, attn_mask=None, key_padding_mask=None,
              layout: str = "bhnd", return_lse: bool = False, causal_alignment: str = "padded"):
    """Fused attention ``softmax(q k^T * scale + mask) v`` with the conventions of ``reference/attention.py``.

    Args:
        q: ``(B, Hq, Nq, D)`` (``layout="bhnd"``) or ``(B, Nq, Hq, D)`` (``layout="bnhd"``), any strides.
        k: ``(B, Hkv, Nk, D)`` or ``(B, Nk, Hkv, D)``, ``Hq % Hkv == 0``; v: the same with head dimension Dv.
        is_causal: bottom-right aligned (key ``j`` allowed for query ``i`` when ``j <= i + Nk - Nq``), torch's name.
        scale: softmax scale, default ``1 / sqrt(D)``.
        attn_mask: bool (True = attend) or additive float, broadcastable to ``(B, Hq, Nq, Nk)`` whatever the layout.
        key_padding_mask: bool ``(B, Nk)``, True = padding.
        return_lse: also return the natural log-sum-exp ``(B, Hq, Nq)`` (``(B, Nq, Hq)`` for bnhd), float32, not
            differentiable.
        causal_alignment: with ``is_causal`` and a ``key_padding_mask``, ``"padded"`` (diagonal at the bottom right of
            the padded keys) or ``"valid"`` (of each sequence's valid keys, flash-attn's meaning for unpadded
            queries); ``reference.attention.scaled_dot_product_attention`` says why ``"padded"`` is the default.

    Returns:
        the output in the layout of ``q`` (a new tensor in the same memory order), and the lse when asked.
    """
    if layout not in ("bhnd", "bnhd"):
        raise ValueError(f"layout must be 'bhnd' or 'bnhd', got {layout!r}")
    head_axis = 1 if layout == "bhnd" else 2
    shape_text = "(B, H, N, D)" if layout == "bhnd" else "(B, N, H, D)"
    _check_qkv(q, k, v, rank=4, shape_text=shape_text, head_axis=head_axis)
    if layout == "bnhd":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, D) views, no copy
    _check_masks(q, k, attn_mask, key_padding_mask)
    validate_scale(scale)
    validate_causal_alignment(causal_alignment)
    problem = _Problem(batch=q.shape[0], n_q=q.shape[2], n_k=k.shape[2], causal=bool(is_causal),
                       scale=_default_scale(scale, q.shape[-1]), cu_q=None, cu_k=None,
                       causal_alignment=causal_alignment)
    out, lse = _FlashAttention.apply(q, k, v, attn_mask, key_padding_mask, problem)
    if layout == "bnhd":
        out, lse = out.transpose(1, 2), lse.transpose(1, 2)
    return (out, _natural(lse)) if return_lse else out


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, max_seqlen_q: int | None = None,
                     max_seqlen_k: int | None = None, is_causal: bool = False,
                     scale: float | None = None, return_lse: bool = False):
    """Attention over a packed batch of variable-length sequences, as ``reference.attention.varlen_attention``.

    Args:
        q: ``(total_q, Hq, D)``, the sequences concatenated; k: ``(total_k, Hkv, D)``; v: ``(total_k, Hkv, Dv)``.
        cu_seqlens_q / cu_seqlens_k: int ``(S + 1,)`` offsets from 0 to the total length, non-decreasing.
        max_seqlen_q / max_seqlen_k: the longest sequence (computed from cu_seqlens when omitted; passing it
            avoids a device-to-host read).
        is_causal: bottom-right aligned within each sequence.

    Returns:
        ``(total_q, Hq, Dv)``, and the log-sum-exp ``(total_q, Hq)`` when ``return_lse``.
    """
    _check_qkv(q, k, v, rank=3, shape_text="(total, H, D)", head_axis=1)
    for name, cu, total in (("cu_seqlens_q", cu_seqlens_q, q.shape[0]), ("cu_seqlens_k", cu_seqlens_k, k.shape[0])):
        validate_cu_seqlens(name, cu, total, q.device)
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError("cu_seqlens_q and cu_seqlens_k must describe the same number of sequences")
    validate_scale(scale)
    lengths_q, lengths_k = cu_seqlens_q.diff(), cu_seqlens_k.diff()
    longest_q = int(lengths_q.max()) if lengths_q.numel() else 0
    longest_k = int(lengths_k.max()) if lengths_k.numel() else 0
    for name, given, longest in (("max_seqlen_q", max_seqlen_q, longest_q), ("max_seqlen_k", max_seqlen_k, longest_k)):
        if given is not None and (not isinstance(given, int) or given < longest):
            raise ValueError(f"{name} must be an int at least the longest sequence ({longest}), got {given!r}")
    q4, k4, v4 = (t.unsqueeze(0).transpose(1, 2) for t in (q, k, v))  # (1, H, total, D) views
    problem = _Problem(batch=cu_seqlens_q.numel() - 1,
                       n_q=longest_q if max_seqlen_q is None else max_seqlen_q,
                       n_k=longest_k if max_seqlen_k is None else max_seqlen_k,
                       causal=bool(is_causal), scale=_default_scale(scale, q.shape[-1]),
                       cu_q=cu_seqlens_q.to(torch.int32), cu_k=cu_seqlens_k.to(torch.int32))
    out, lse = _FlashAttention.apply(q4, k4, v4, None, None, problem)
    out = out[0].transpose(0, 1)  # (total_q, Hq, Dv)
    lse = lse[0].transpose(0, 1)  # (total_q, Hq)
    return (out, _natural(lse)) if return_lse else out


def _triton_backend(q, k, v, *, attn_mask, key_padding_mask, is_causal, scale, return_lse, causal_alignment="padded"):
    """``reference.attention.scaled_dot_product_attention(..., backend="triton")``: (B, H, N, D) inputs.

    The seam has validated shapes already; what this backend cannot run here (float64, CPU tensors without
    the interpreter) raises ``NotImplementedError``, the seam's contract, so callers that try every backend
    (``fusebench run``) report it instead of failing."""
    if q.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(f"backend 'triton' runs float16, bfloat16 and float32, not {q.dtype}")
    if not _INTERPRETING and q.device.type != "cuda":
        raise NotImplementedError(f"backend 'triton' needs CUDA tensors (got {q.device}) or TRITON_INTERPRET=1 set "
                                  "before kernels.attention is imported (the CPU interpreter)")
    return attention(q, k, v, is_causal=is_causal, scale=scale, attn_mask=attn_mask,
                     key_padding_mask=key_padding_mask, layout="bhnd", return_lse=return_lse,
                     causal_alignment=causal_alignment)

