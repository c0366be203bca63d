"""The compressed-sparse-row core that the graph kernels share: ``kernels/spmm.py`` (aggregation) and
``kernels/gat.py`` (graph attention) are peers built on it.

* The layouts: the kernels read :class:`reference.graph.Compressed` (``rowptr``, ``col``, ``perm``, what
  ``Graph.csr()`` and ``Graph.csc()`` return) as it is. :class:`SparsePattern` (a CSR, its CSC and the
  segment length: what an aggregation's forward and backward walk), :func:`validate_layout` and
  :func:`validate_layouts` (a CSR and its optional CSC), :func:`derive_csc` (the transposed layout by a
  stable sort) and :func:`check_edges_per_program`.
* The row schedule: :func:`segment_schedule` splits every row into segments of at most ``chunk`` CSR
  positions (one program each), so a hub row does not serialize the launch. The ``@triton.jit`` helpers
  the graph kernels share: :func:`segment_bounds` (a program's row and CSR range), :func:`split_bounds`
  (a combine program's row and partials), :func:`block_range` (a tile's offsets and mask),
  :func:`edge_block` (a block of positions and their columns) and :func:`edge_dot` (the per-edge dot
  products of the backward kernels). Triton inlines them, so they cost nothing at run time (``fusebench
  inspect`` shows the compiled kernels).
* The segment kernel (:func:`segment_kernel`, launched by :func:`segment_reduce`): the per-segment sum or
  max over a row's edges of ``r[i] w[perm[k]] c[col[k]] x[col[k]]`` with float32 accumulation, the max's
  arg-max edge, and the masked sum of the max's backward. ``kernels/spmm.py`` documents the algorithm,
  its tie rule and determinism; ``kernels/gat.py`` uses it for its per-node sums of edge gradients.
* :func:`combine_kernel`: the second pass that reduces a split row's float32 partials in segment order.
* The tile rules: the feature tile from the width, the edge tile from the feature tile.

Every load and store of these kernels is masked to the ranges :func:`validate_layout` establishes.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels._common import INT32_LIMIT, check_device
from reference.graph import Compressed, check_index_vector, check_rowptr, coo_to_compressed

__all__ = [
    # layouts, schedule and validation
    "SparsePattern", "Schedule", "segment_schedule", "derive_csc", "check_layout_type", "validate_layout",
    "validate_layouts", "check_on_layout_device", "check_operand", "check_edges_per_program", "check_int32_sizes",
    # @triton.jit helpers, kernels and their launcher
    "segment_bounds", "split_bounds", "block_range", "edge_block", "edge_dot", "segment_kernel", "combine_kernel",
    "segment_reduce",
    # constants and tile rules
    "SUPPORTED_DTYPES", "INDEX_DTYPES", "DEFAULT_EDGES_PER_PROGRAM", "SUM", "MAX", "MASKED_SUM", "FEATURE_TILES",
    "TILE_ELEMENTS", "NUM_WARPS", "BLOCK_S", "feature_tile", "edge_tile", "INDEX_POINTERS",
]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INDEX_DTYPES = (torch.int32, torch.int64)
DEFAULT_EDGES_PER_PROGRAM = 256
# The kernels' pointer arguments that hold the index dtype (the layout and the schedule), as patterns of
# their names for the compile specs (kernels._compile.spec_for)
INDEX_POINTERS = ("rowptr_ptr", "col_ptr", "perm_ptr", "seg_*_ptr", "split_*_ptr")

# Reduction codes (constexpr REDUCE of the segment kernel)
SUM, MAX, MASKED_SUM = 0, 1, 2  # MASKED_SUM: the backward of max (sum only where the arg-max matches)
# The same codes as constexpr globals, the only globals a @triton.jit function may read
_REDUCE_MAX, _REDUCE_MASKED_SUM = tl.constexpr(MAX), tl.constexpr(MASKED_SUM)


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def segment_bounds(pid_s, rowptr_ptr, seg_row_ptr, seg_start_ptr, CHUNK: tl.constexpr):
    """``(row, start, end)``: the row of segment ``pid_s`` and its CSR positions ``[start, end)``."""
    row = tl.load(seg_row_ptr + pid_s)
    start = tl.load(seg_start_ptr + pid_s)
    end = tl.minimum(start + CHUNK, tl.load(rowptr_ptr + row + 1))
    return row, start, end


@triton.jit
def split_bounds(pid_r, split_row_ptr, split_first_ptr, split_count_ptr):
    """``(row, first, count)``: the split row that combine program ``pid_r`` finishes, its first partial row and
    its number of partials (one per segment)."""
    row = tl.load(split_row_ptr + pid_r)
    first = tl.load(split_first_ptr + pid_r)
    count = tl.load(split_count_ptr + pid_r)
    return row, first, count


@triton.jit
def block_range(first, limit, BLOCK: tl.constexpr):
    """``(offsets, mask)``: the ``BLOCK`` offsets from ``first``, masked to those below ``limit``."""
    offs = first + tl.arange(0, BLOCK)
    return offs, offs < limit


@triton.jit
def edge_block(col_ptr, k0, end, BLOCK_E: tl.constexpr):
    """``(offsets, mask, col)`` of the CSR positions ``k0 .. k0 + BLOCK_E - 1`` of a segment ending at ``end``
    (``col`` is 0 on masked lanes: a valid row to gather, whose values the masks then drop)."""
    offs_e, mask_e = block_range(k0, end, BLOCK_E)
    return offs_e, mask_e, tl.load(col_ptr + offs_e, mask=mask_e, other=0)


@triton.jit
def edge_dot(x_ptr, src, mask_e, g_ptr, arg_ptr, eid, num_features, stride_xn,
             HAS_ARG: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    """``(BLOCK_E,)`` float32: ``<x[src_e], g>`` for each edge of a block, swept over the features in ``BLOCK_F``
    tiles (an SDDMM row: ``g`` is the row's output gradient). With ``HAS_ARG`` a feature counts only where
    ``arg`` holds the edge's id ``eid_e`` (the backward of max). ``g_ptr`` and ``arg_ptr`` point at the row."""
    dot = tl.zeros([BLOCK_E], tl.float32)
    for f0 in range(0, num_features, BLOCK_F):
        offs_f, mask_f = block_range(f0, num_features, BLOCK_F)
        xv = tl.load(x_ptr + src[:, None] * stride_xn + offs_f[None, :], mask=mask_e[:, None] & mask_f[None, :],
                     other=0.0).to(tl.float32)  # (BLOCK_E, BLOCK_F)
        gv = tl.load(g_ptr + offs_f, mask=mask_f, other=0.0).to(tl.float32)
        prod = xv * gv[None, :]
        if HAS_ARG:
            chosen = tl.load(arg_ptr + offs_f, mask=mask_f, other=-1)
            prod = tl.where(chosen[None, :] == eid[:, None], prod, 0.0)
        dot += tl.sum(prod, axis=1)
    return dot


@triton.jit
def segment_kernel(
    # layout: CSR (or CSC for the backward) and the segment schedule
    rowptr_ptr, col_ptr, perm_ptr, seg_row_ptr, seg_start_ptr, seg_part_ptr,
    # operands
    x_ptr, w_ptr, rscale_ptr, cscale_ptr, arg_in_ptr,
    # outputs: the final rows, or float32 partials of split rows
    out_ptr, arg_out_ptr, part_ptr, part_arg_ptr,
    # sizes and strides
    num_features, num_edges, stride_xn,
    # meta-parameters
    REDUCE: tl.constexpr, HAS_W: tl.constexpr, HAS_RSCALE: tl.constexpr, HAS_CSCALE: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr, CHUNK: tl.constexpr,
):
    """One segment (<= CHUNK edges of one row) times one feature tile."""
    pid_s = tl.program_id(0)
    row, start, end = segment_bounds(pid_s, rowptr_ptr, seg_row_ptr, seg_start_ptr, CHUNK)
    part = tl.load(seg_part_ptr + pid_s)  # -1: this program owns the whole row
    offs_f, mask_f = block_range(tl.program_id(1) * BLOCK_F, num_features, BLOCK_F)
    row_scale = 1.0
    if HAS_RSCALE:
        row_scale = tl.load(rscale_ptr + row).to(tl.float32)

    if REDUCE == _REDUCE_MAX:
        acc = tl.full([BLOCK_F], float("-inf"), tl.float32)
        arg = tl.full([BLOCK_F], -1, perm_ptr.dtype.element_ty)
    else:
        acc = tl.zeros([BLOCK_F], tl.float32)
    for k0 in range(start, end, BLOCK_E):
        offs_e, mask_e, src = edge_block(col_ptr, k0, end, BLOCK_E)  # src: (BLOCK_E,) rows of x
        mask = mask_e[:, None] & mask_f[None, :]
        eid = tl.load(perm_ptr + offs_e, mask=mask_e, other=0)  # (BLOCK_E,) edge ids
        coef = tl.zeros([BLOCK_E], tl.float32) + row_scale
        if HAS_W:
            coef = coef * tl.load(w_ptr + eid, mask=mask_e, other=0.0).to(tl.float32)
        if HAS_CSCALE:
            coef = coef * tl.load(cscale_ptr + src, mask=mask_e, other=0.0).to(tl.float32)
        vals = tl.load(x_ptr + src[:, None] * stride_xn + offs_f[None, :], mask=mask, other=0.0).to(tl.float32)
        vals = vals * coef[:, None]  # (BLOCK_E, BLOCK_F)
        if REDUCE == _REDUCE_MAX:
            vals = tl.where(mask, vals, float("-inf"))
            block_max = tl.max(vals, axis=0)
            # tie rule: the smallest edge id among the maxima (edge ids increase along a CSR row)
            hit = mask & (vals == block_max[None, :])
            block_arg = tl.min(tl.where(hit, eid[:, None], num_edges), axis=0)
            take = block_max > acc  # strict: an earlier block keeps its (smaller) edge id on a tie
            acc = tl.where(take, block_max, acc)
            arg = tl.where(take, block_arg.to(arg.dtype), arg)
        elif REDUCE == _REDUCE_MASKED_SUM:
            chosen = tl.load(arg_in_ptr + src[:, None] * num_features + offs_f[None, :], mask=mask, other=-1)
            acc += tl.sum(tl.where(mask & (chosen == eid[:, None]), vals, 0.0), axis=0)
        else:
            acc += tl.sum(vals, axis=0)

    if part < 0:
        if REDUCE == _REDUCE_MAX:
            acc = tl.where(end > start, acc, 0.0)  # an empty row is 0, not -inf
            tl.store(arg_out_ptr + row * num_features + offs_f, arg, mask=mask_f)
        tl.store(out_ptr + row * num_features + offs_f, acc.to(out_ptr.dtype.element_ty), mask=mask_f)
    else:
        tl.store(part_ptr + part * num_features + offs_f, acc, mask=mask_f)
        if REDUCE == _REDUCE_MAX:
            tl.store(part_arg_ptr + part * num_features + offs_f, arg, mask=mask_f)


@triton.jit
def combine_kernel(
    split_row_ptr, split_first_ptr, split_count_ptr,  # the rows that were split over several segments
    part_ptr, part_arg_ptr, out_ptr, arg_out_ptr,
    num_features, num_edges,
    IS_MAX: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """Second pass: reduce a split row's partials in segment order and write the row."""
    row, first, count = split_bounds(tl.program_id(0), split_row_ptr, split_first_ptr, split_count_ptr)
    offs_f, mask_f = block_range(tl.program_id(1) * BLOCK_F, num_features, BLOCK_F)
    if IS_MAX:
        acc = tl.full([BLOCK_F], float("-inf"), tl.float32)
        arg = tl.full([BLOCK_F], -1, split_first_ptr.dtype.element_ty)
    else:
        acc = tl.zeros([BLOCK_F], tl.float32)
    for s0 in range(0, count, BLOCK_S):
        offs_s, mask_s = block_range(s0, count, BLOCK_S)
        mask = mask_s[:, None] & mask_f[None, :]
        offs = (first + offs_s)[:, None] * num_features + offs_f[None, :]
        if IS_MAX:
            vals = tl.load(part_ptr + offs, mask=mask, other=float("-inf"))
            block_max = tl.max(vals, axis=0)
            args = tl.load(part_arg_ptr + offs, mask=mask, other=-1)
            hit = mask & (vals == block_max[None, :]) & (args >= 0)
            block_arg = tl.min(tl.where(hit, args, num_edges), axis=0)
            take = block_max > acc
            acc = tl.where(take, block_max, acc)
            arg = tl.where(take, block_arg.to(arg.dtype), arg)
        else:
            acc += tl.sum(tl.load(part_ptr + offs, mask=mask, other=0.0), axis=0)
    tl.store(out_ptr + row * num_features + offs_f, acc.to(out_ptr.dtype.element_ty), mask=mask_f)
    if IS_MAX:
        tl.store(arg_out_ptr + row * num_features + offs_f, arg, mask=mask_f)


# --------------------------------------------------------------------------------------------------
# Tile rules: chosen by a fixed rule from the feature width (no timing, so a given input always runs the
# same configuration and gives the same bits)
# --------------------------------------------------------------------------------------------------

FEATURE_TILES = (16, 64, 128)
TILE_ELEMENTS = 2048  # BLOCK_E * BLOCK_F: 16 float32 values per thread at 4 warps, no spills
NUM_WARPS = 4
BLOCK_S = 16  # partials combined per step in the second pass


def feature_tile(num_features: int) -> int:
    return next(t for t in FEATURE_TILES if num_features <= t) if num_features <= FEATURE_TILES[-1] else 128


# The segment kernel's edges per step for each feature tile, measured with `fusebench inspect --check` on every
# launched specialization: 64 edges at F16 spilled with int64 indices (sm_90), 32 at F64 with int64 indices in
# fp16/bf16 (sm_80).
EDGE_TILES = {16: 32, 64: 32, 128: 16}


def edge_tile(block_f: int, *, half_int64: bool = False) -> int:
    """The gather's edges per step. ``half_int64``: a 16-bit feature dtype with int64 indices, whose F64 tile
    spilled at 32 edges on sm_80 (at 16 edges the float32 max backward spilled instead, so only these halve)."""
    return EDGE_TILES[block_f] // 2 if half_int64 and block_f == 64 else EDGE_TILES[block_f]


# --------------------------------------------------------------------------------------------------
# Layouts, schedule and validation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    seg_row: torch.Tensor  # (S,) the row of each segment
    seg_start: torch.Tensor  # (S,) its first CSR position
    seg_part: torch.Tensor  # (S,) its partial row, or -1 when the segment is the whole row
    split_row: torch.Tensor  # (R,) the rows that span several segments
    split_first: torch.Tensor  # (R,) their first partial row
    split_count: torch.Tensor  # (R,) and their number of segments
    num_partials: int
    chunk: int


_SCHEDULES: dict[tuple, tuple[weakref.ref, Schedule]] = {}


def segment_schedule(rowptr: torch.Tensor, chunk: int) -> Schedule:
    """Split rows into segments of at most ``chunk`` positions (cached per rowptr tensor and version)."""
    key = (id(rowptr), rowptr._version, chunk)
    hit = _SCHEDULES.get(key)
    if hit is not None and hit[0]() is rowptr:
        return hit[1]
    dtype, device = rowptr.dtype, rowptr.device
    num_rows = rowptr.numel() - 1
    degree = (rowptr[1:] - rowptr[:-1]).long()  # (N,)
    segments = ((degree + chunk - 1) // chunk).clamp_min(1)  # (N,) an empty row still gets one
    segptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=device)
    segptr[1:] = torch.cumsum(segments, 0)
    total = int(segptr[-1])
    seg_row = torch.repeat_interleave(torch.arange(num_rows, device=device), segments, output_size=total)  # (S,)
    seg_start = rowptr[seg_row].long() + (torch.arange(total, device=device) - segptr[seg_row]) * chunk
    split = segments > 1  # (N,)
    split_seg = split[seg_row]  # (S,)
    seg_part = torch.where(split_seg, torch.cumsum(split_seg, 0) - 1, -1)
    split_row = split.nonzero().flatten()
    schedule = Schedule(seg_row.to(dtype), seg_start.to(dtype), seg_part.to(dtype), split_row.to(dtype),
                         seg_part[segptr[split_row]].to(dtype), segments[split_row].to(dtype),
                         int(split_seg.sum()), chunk)
    if len(_SCHEDULES) > 64:
        _SCHEDULES.clear()
    _SCHEDULES[key] = (weakref.ref(rowptr), schedule)
    return schedule


def derive_csc(csr: Compressed, num_cols: int | None = None) -> Compressed:
    """The transposed layout (rows = the CSR's columns, ``num_cols`` of them) from a CSR one: its positions grouped
    by column with a stable sort, so each CSC row keeps edge order, as ``Graph.csc()`` does."""
    num_cols = csr.num_rows if num_cols is None else num_cols
    by_column = coo_to_compressed(csr.col, csr.row_ids(), num_cols)  # its perm: CSR positions, grouped by column
    return Compressed(by_column.rowptr, by_column.col, csr.perm[by_column.perm.long()])


@dataclass(frozen=True)
class SparsePattern:
    """Where the nonzeros of ``A`` (R rows over ``num_cols`` columns) are, in the two layouts the kernels walk:
    ``csr`` for the forward, ``csc`` (rows = columns of ``A``) for the backward, derived from the CSR when not
    given; both are scheduled in segments of ``chunk`` positions."""

    csr: Compressed
    csc: Compressed | None
    num_cols: int
    chunk: int

    def csr_schedule(self) -> Schedule:
        return segment_schedule(self.csr.rowptr, self.chunk)

    def transposed(self) -> Compressed:
        return self.csc if self.csc is not None else derive_csc(self.csr, self.num_cols)


def check_layout_type(name: str, layout) -> None:
    if not isinstance(layout, Compressed):
        raise TypeError(f"{name} must be a reference.graph.Compressed (rowptr, col, perm; Graph.csr() gives one), "
                        f"got {type(layout).__name__}")


def validate_layout(name: str, layout: Compressed, num_nodes: int, *, check_values: bool,
                     num_cols: int | None = None) -> None:
    """Types and shapes always; values (monotonic rowptr, index ranges) when ``check_values``.

    ``num_nodes`` rows; ``col`` indexes ``num_cols`` columns (default: square, ``num_nodes``)."""
    num_cols = num_nodes if num_cols is None else num_cols
    check_layout_type(name, layout)
    parts = (("rowptr", layout.rowptr), ("col", layout.col), ("perm", layout.perm))
    for part, t in parts:
        check_index_vector(f"{name}.{part}", t)
        if t.dtype != layout.rowptr.dtype:
            raise TypeError(f"{name}.{part} must have {name}.rowptr's dtype {layout.rowptr.dtype}, got {t.dtype}")
        if t.device != layout.rowptr.device:
            raise ValueError(f"{name}.{part} must be on {name}.rowptr's device {layout.rowptr.device}, got {t.device}")
    num_edges = layout.col.numel()
    if layout.rowptr.numel() != num_nodes + 1:
        raise ValueError(f"{name}.rowptr must have num_nodes + 1 = {num_nodes + 1} entries, "
                         f"got {layout.rowptr.numel()}")
    if layout.perm.numel() != num_edges:
        raise ValueError(f"{name}.perm must have one entry per edge ({num_edges}), got {layout.perm.numel()}")
    if layout.rowptr.dtype == torch.int32 and num_edges > INT32_LIMIT - DEFAULT_EDGES_PER_PROGRAM:
        raise ValueError(f"{name}: {num_edges} edges overflow the int32 index path; use int64 indices")
    if not check_values:
        return
    check_rowptr(f"{name}.rowptr", layout.rowptr, num_edges)
    if num_edges:
        for part, t, high in (("col", layout.col, num_cols), ("perm", layout.perm, num_edges)):
            low, top = int(t.min()), int(t.max())
            if low < 0 or top >= high:
                bad = low if low < 0 else top
                raise ValueError(f"{name}.{part} must hold indices in [0, {high}), found {bad}")


def validate_layouts(csr: Compressed, csc: Compressed | None, num_rows: int, num_cols: int, *,
                     check_values: bool) -> None:
    """A CSR of ``num_rows`` rows over ``num_cols`` columns and, when given, its CSC (the same edges, transposed)."""
    validate_layout("csr", csr, num_rows, check_values=check_values, num_cols=num_cols)
    if csc is not None:
        validate_layout("csc", csc, num_cols, check_values=check_values, num_cols=num_rows)
        if csc.num_edges != csr.num_edges or csc.rowptr.dtype != csr.rowptr.dtype:
            raise ValueError(f"csc must describe the same {csr.num_edges} edges with {csr.rowptr.dtype} indices, got "
                             f"{csc.num_edges} edges of {csc.rowptr.dtype}")


def check_on_layout_device(name: str, t: torch.Tensor, layout: Compressed) -> None:
    """``t`` on the layout's device, and that a device the kernels run on (CUDA, or any under the interpreter)."""
    if t.device != layout.rowptr.device:
        raise ValueError(f"{name} must be on the layout's device {layout.rowptr.device}, got {t.device}")
    check_device(name, t)


def check_operand(name: str, t, rank: int, shape_text: str) -> None:
    """A feature-like operand: a float16/bfloat16/float32 tensor of ``rank`` dimensions (``shape_text`` names them)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32 (the kernel accumulates in float32), "
                        f"got {t.dtype}")
    if t.dim() != rank:
        raise ValueError(f"{name} must be {rank}-D with shape {shape_text}, got shape {tuple(t.shape)}")


def check_edges_per_program(edges_per_program) -> int:
    """The schedule's segment length: ``edges_per_program`` (a positive power of two) or the default."""
    chunk = DEFAULT_EDGES_PER_PROGRAM if edges_per_program is None else edges_per_program
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1 or chunk & (chunk - 1):
        raise ValueError(f"edges_per_program must be a positive power of two, got {edges_per_program!r}")
    return chunk


def check_int32_sizes(index_dtype: torch.dtype, num_nodes: int, num_features: int) -> None:
    if index_dtype == torch.int32 and num_nodes * max(num_features, 1) > INT32_LIMIT:
        raise ValueError(f"x: num_nodes x features = {num_nodes} x {num_features} = {num_nodes * num_features} "
                         "overflows the int32 index path (offsets beyond 2^31 - 1); use int64 indices")


# --------------------------------------------------------------------------------------------------
# Launcher: allocate and launch (inputs already validated)
# --------------------------------------------------------------------------------------------------


def segment_reduce(layout: Compressed, schedule: Schedule, x: torch.Tensor, *, num_out_rows: int, reduce: int,
                    weight=None, row_scale=None, col_scale=None, arg_in=None, out_dtype=None, out=None, arg=None):
    """``out (R, F)`` (and the arg-max edge ids for ``MAX``) of one segment-kernel launch (+ combine).

    ``out`` and ``arg`` may be given (contiguous, ``(R, F)``): the tests place them in guard zones.
    """
    num_features = x.shape[1]
    index_dtype = layout.rowptr.dtype
    if out is None:
        out = torch.empty((num_out_rows, num_features), dtype=out_dtype or x.dtype, device=x.device)
    is_max = reduce == MAX
    if arg is None:
        arg = torch.empty((num_out_rows, num_features) if is_max else (1,), dtype=index_dtype, device=x.device)
    if num_out_rows == 0 or num_features == 0:
        return out, arg
    if x.stride(1) != 1:
        x = x.contiguous()
    check_int32_sizes(index_dtype, max(schedule.num_partials, num_out_rows, x.shape[0]), num_features)
    part = torch.empty((max(schedule.num_partials, 1), num_features), dtype=torch.float32, device=x.device)
    part_arg = torch.empty((max(schedule.num_partials, 1), num_features) if is_max else (1,), dtype=index_dtype,
                           device=x.device)
    block_f = feature_tile(num_features)
    half_int64 = x.element_size() == 2 and index_dtype == torch.int64
    block_e = min(edge_tile(block_f, half_int64=half_int64), schedule.chunk)
    dummy = x
    grid = (schedule.seg_row.numel(), triton.cdiv(num_features, block_f))
    segment_kernel[grid](
        layout.rowptr, layout.col, layout.perm, schedule.seg_row, schedule.seg_start, schedule.seg_part,
        x, dummy if weight is None else weight, dummy if row_scale is None else row_scale,
        dummy if col_scale is None else col_scale, arg if arg_in is None else arg_in,
        out, arg, part, part_arg,
        num_features, layout.num_edges, x.stride(0),
        REDUCE=reduce, HAS_W=weight is not None, HAS_RSCALE=row_scale is not None,
        HAS_CSCALE=col_scale is not None, BLOCK_E=block_e, BLOCK_F=block_f, CHUNK=schedule.chunk,
        num_warps=NUM_WARPS,
    )
    if schedule.split_row.numel():
        grid = (schedule.split_row.numel(), triton.cdiv(num_features, block_f))
        combine_kernel[grid](schedule.split_row, schedule.split_first, schedule.split_count, part, part_arg, out,
                              arg, num_features, layout.num_edges, IS_MAX=is_max, BLOCK_S=BLOCK_S, BLOCK_F=block_f,
                              num_warps=NUM_WARPS)
    return out, arg
