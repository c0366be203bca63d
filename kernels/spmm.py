"""CSR neighbour aggregation in Triton (SpMM for sum): sum, mean, max, edge weights, fused GCN scaling.

Algorithm. With the graph in CSR form (rows = destination nodes, ``col`` = sources, ``perm`` = the edge
id at each CSR position; see ``reference/graph.py``), every destination ``i`` reduces over its
incoming edges ``e = (j -> i)``:

    out[i, f] = REDUCE over k in rowptr[i]:rowptr[i+1] of  r[i] * w[perm[k]] * c[col[k]] * x[col[k], f]

``w`` are the edge weights (read through ``perm`` in their original order: no permuted or normalized
copy is made), ``r`` and ``c`` are optional per-node scale vectors. GCN normalization (Kipf and Welling
2017) is ``r = c = deg^-1/2`` with ``deg`` the weighted in-degree (computed by this same kernel from
the weights, so it stays differentiable in them); ``mean`` is ``sum`` with ``r`` divided by the in-edge
count. Matrix form for sum: ``out = diag(r) A diag(c) X`` with ``A[i, j] = sum of w_e over j -> i``.
The sums run in float32 whatever the input dtype; the output has ``x``'s dtype.

Row scheduling (power-law graphs). A program does not own a row: it owns a *segment*, at most
``edges_per_program`` (default 256) consecutive CSR positions of one row, times one tile of
``BLOCK_F`` features. A row of degree ``d`` becomes ``ceil(d / 256)`` segments (one for an empty row),
so a hub with a million in-edges is spread over ~4k programs instead of serializing the launch. A row
that fits in one segment is finished and written by its program. A split row's segments write float32
partials (and, for max, the arg-max edge) to a scratch buffer, and a second, small launch combines
each split row's partials in segment order. The schedule (segment -> row, start) is built from
``rowptr`` with a few torch ops and cached per ``rowptr`` tensor. The segment and combine kernels, the
schedule, the layout checks and the tile rules live in the CSR core ``kernels/_csr.py``, which
``kernels/gat.py`` shares; this module adds the per-edge gradient kernel, the autograd and the API.

Determinism. No atomics anywhere: every output element is written by exactly one program, and every
sum is taken in a fixed order (edge blocks in CSR order, then segments in order). The backward for
``x`` is the same kernel run over the CSC layout (rows = sources), ``dX = diag(c) A^T diag(r) dOut``,
which the caller passes in (``Graph.csc()`` caches it; it is derived from the CSR when not given).
Gradients for the edge weights and the scale vectors use a per-edge kernel (an SDDMM:
``t_e = <x[j], dOut[i]>``), each edge written once, then the same segment kernel for the per-node sums.
Results are bit-identical from run to run on the same device and configuration.

Supported:

* ``reduce`` in ``sum``, ``mean``, ``max``; optional edge weights (any sign; GCN expects non-negative);
  ``normalize="gcn"`` with any reduction; any feature width (features are tiled by ``BLOCK_F`` of 16,
  64 or 128 and masked: 1, 7, 100, 602 work); float32, float16 and bfloat16 features; weights in the
  features' dtype or float32; index dtypes int32 and int64 (all of rowptr, col, perm of one dtype);
* rectangular layouts (``num_cols``): ``R`` output rows over the rows of ``x``, e.g. a graph readout
  (rows = graphs, ``col`` = their nodes: seed section 26's pooling is this kernel with ``sum``/``mean``/
  ``max``), with the same backward;
* isolated nodes and empty graphs: a row with no incoming edge is **0** for sum, mean and max (the
  reference's convention); self-loops and duplicate edges are ordinary edges;
* gradients for ``x``, for ``edge_weight`` (including through the GCN degrees) when it requires grad.
  ``max`` sends each output element's gradient to one arg-max edge. Tie rule: among edges with the
  same maximal message, the one with the **smallest edge id** (the first in ``edge_index`` order, which
  is also the first in its CSR row since rows keep edge order). The reference splits ties evenly; the
  two agree on ``x`` whenever the tied edges share a source and weight (duplicate edges), which is the
  only way ties arise with random inputs.

Not supported: float64 (use the reference), gradients through the graph structure.

Index paths. The int32 path keeps every offset in 32 bits; it raises a ``ValueError`` before launch
when ``num_nodes * features`` (the feature, output and arg-max buffers), the partial buffer, or the
edge count would reach 2^31. Convert the graph to int64 (``graph.to(index_dtype=torch.int64)``) for
those sizes: int64 indices make every offset 64-bit.

Validation before launch: x is 2-D with ``num_nodes`` rows, float16/bfloat16/float32, on the layout's
device; rowptr has ``num_nodes + 1`` entries, starts at 0, is non-decreasing and ends at ``E``; col and
perm have ``E`` entries, ``col`` in ``[0, num_nodes)``, ``perm`` in ``[0, E)``; weights ``(E,)``. Each
failure names the argument. Every load and store of the kernels is masked to the ranges that these
checks establish, so no input that passes them makes a kernel read or write out of bounds.

CPU interpreter (``TRITON_INTERPRET=1``): the kernels run unchanged under it, so all program logic can be
checked without a GPU; no ``tl.dot`` is used, so the interpreter's bfloat16 ``tl.dot`` bug (upstream triton
issue 11584) does not apply. Interpreter timings are not kernel timings, and the compiled code (registers,
spills) is what ``fusebench inspect`` reads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import TRITON_DTYPE
from kernels._compile import CompileSpec, spec_for
from kernels._csr import (
    BLOCK_S,
    DEFAULT_EDGES_PER_PROGRAM,
    FEATURE_TILES,
    INDEX_DTYPES,
    INDEX_POINTERS,
    MASKED_SUM,
    MAX,
    NUM_WARPS,
    SUM,
    SUPPORTED_DTYPES,
    Schedule,
    SparsePattern,
    check_edges_per_program,
    check_int32_sizes,
    check_layout_type,
    check_on_layout_device,
    check_operand,
    combine_kernel,
    edge_block,
    edge_dot,
    edge_tile,
    feature_tile,
    segment_bounds,
    segment_kernel,
    segment_reduce,
    segment_schedule,
    validate_layouts,
)
from reference.gnn import validate_reduce
from reference.graph import Compressed, coo_to_compressed

__all__ = ["csr_aggregate", "compile_specs"]

# The per-edge gradient's edges per step: it holds x, dOut, the argmax and a product per element, and spilled
# at 16 x F128 in fp16/bf16 with int32 indices (sm_90), so it takes half the gather's tile there.
_GRAD_EDGE_TILES = {16: 32, 64: 16, 128: 8}


def _grad_edge_tile(block_f: int, *, int64: bool) -> int:
    """The per-edge gradient's edges per step. With int64 indices it keeps 16 edges at F128: 8 spilled in
    fp16/bf16 on sm_90 under triton 3.6 (the lent GPU's), 16 spills under neither 3.6 nor 3.9."""
    return 16 if int64 and block_f == 128 else _GRAD_EDGE_TILES[block_f]


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _edge_grad_kernel(
    # layout: the forward CSR and its segment schedule
    rowptr_ptr, col_ptr, perm_ptr, seg_row_ptr, seg_start_ptr,
    # operands
    x_ptr, g_ptr, arg_ptr, w_ptr, rscale_ptr, cscale_ptr,
    # outputs, indexed by edge id
    gw_ptr, u_ptr,
    num_features, stride_xn,
    HAS_ARG: tl.constexpr, HAS_W: tl.constexpr, HAS_RSCALE: tl.constexpr, HAS_CSCALE: tl.constexpr,
    WRITE_GW: tl.constexpr, WRITE_U: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr, CHUNK: tl.constexpr,
):
    """Per edge e = (j -> i): t_e = sum_f [arg[i, f] == e] x[j, f] dOut[i, f] (an SDDMM);
    writes dW[e] = r[i] c[j] t_e and u[e] = w_e t_e (for the scale vectors' gradients)."""
    row, start, end = segment_bounds(tl.program_id(0), rowptr_ptr, seg_row_ptr, seg_start_ptr, CHUNK)
    row_scale = 1.0
    if HAS_RSCALE:
        row_scale = tl.load(rscale_ptr + row).to(tl.float32)
    for k0 in range(start, end, BLOCK_E):
        offs_e, mask_e, src = edge_block(col_ptr, k0, end, BLOCK_E)
        eid = tl.load(perm_ptr + offs_e, mask=mask_e, other=0)
        t = edge_dot(x_ptr, src, mask_e, g_ptr + row * num_features, arg_ptr + row * num_features, eid, num_features,
                     stride_xn, HAS_ARG, BLOCK_E, BLOCK_F)
        if WRITE_GW:
            gw = t * row_scale
            if HAS_CSCALE:
                gw = gw * tl.load(cscale_ptr + src, mask=mask_e, other=0.0).to(tl.float32)
            tl.store(gw_ptr + eid, gw.to(gw_ptr.dtype.element_ty), mask=mask_e)
        if WRITE_U:
            u = t
            if HAS_W:
                u = u * tl.load(w_ptr + eid, mask=mask_e, other=0.0).to(tl.float32)
            tl.store(u_ptr + eid, u, mask=mask_e)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _check_features(name: str, x, num_rows: int) -> None:
    check_operand(name, x, 2, "(num_nodes, features)")
    if x.shape[0] != num_rows:
        raise ValueError(f"{name} must have num_nodes={num_rows} rows (the layout's columns), got {x.shape[0]}")


# --------------------------------------------------------------------------------------------------
# Launchers: allocate and launch (inputs already validated)
# --------------------------------------------------------------------------------------------------


def _edge_grad(layout: Compressed, schedule: Schedule, x, grad_out, arg, weight, row_scale, col_scale, *,
               want_gw: bool, want_u: bool):
    """Per-edge gradient pieces ``(dW (E,) or None, u (E,) float32 or None)``."""
    num_edges, num_features = layout.num_edges, x.shape[1]
    gw = torch.zeros(num_edges, dtype=weight.dtype, device=x.device) if want_gw else None
    u = torch.zeros(num_edges, dtype=torch.float32, device=x.device) if want_u else None
    if num_edges == 0 or num_features == 0:
        return gw, u
    if x.stride(1) != 1:
        x = x.contiguous()
    block_f = feature_tile(num_features)
    block_e = min(_grad_edge_tile(block_f, int64=layout.rowptr.dtype == torch.int64), schedule.chunk)
    dummy = u if u is not None else gw
    _edge_grad_kernel[(schedule.seg_row.numel(),)](
        layout.rowptr, layout.col, layout.perm, schedule.seg_row, schedule.seg_start,
        x, grad_out, arg, weight if weight is not None else dummy, dummy if row_scale is None else row_scale,
        dummy if col_scale is None else col_scale, gw if gw is not None else dummy, u if u is not None else dummy,
        num_features, x.stride(0),
        HAS_ARG=arg.dim() == 2, HAS_W=weight is not None, HAS_RSCALE=row_scale is not None,
        HAS_CSCALE=col_scale is not None, WRITE_GW=want_gw, WRITE_U=want_u,
        BLOCK_E=block_e, BLOCK_F=block_f, CHUNK=schedule.chunk, num_warps=NUM_WARPS,
    )
    return gw, u


# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class _CsrAggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, row_scale, col_scale, pattern: SparsePattern, is_max: bool):
        out, arg = segment_reduce(pattern.csr, pattern.csr_schedule(), x, num_out_rows=pattern.csr.num_rows,
                                  reduce=MAX if is_max else SUM, weight=weight, row_scale=row_scale,
                                  col_scale=col_scale)
        ctx.save_for_backward(x, weight, row_scale, col_scale, arg)
        ctx.pattern, ctx.is_max = pattern, is_max
        ctx.mark_non_differentiable(arg)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, row_scale, col_scale, arg = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        need_x, need_w, need_r, need_c = ctx.needs_input_grad[:4]
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_r = grad_c = None
        csc = pattern.transposed() if (need_x or need_c) else None
        if need_x:
            # dX = diag(c) A^T diag(r) dOut: the same kernel over the transposed layout, scales swapped
            grad_x, _ = segment_reduce(csc, segment_schedule(csc.rowptr, pattern.chunk), grad_out,
                                       num_out_rows=x.shape[0], reduce=MASKED_SUM if ctx.is_max else SUM,
                                       weight=weight, row_scale=col_scale, col_scale=row_scale,
                                       arg_in=arg if ctx.is_max else None, out_dtype=x.dtype)
        if need_w or need_r or need_c:
            schedule = pattern.csr_schedule()
            grad_w, u = _edge_grad(pattern.csr, schedule, x, grad_out, arg, weight, row_scale, col_scale,
                                   want_gw=need_w, want_u=need_r or need_c)
            if need_r:  # dr[i] = sum over edges into i of w_e c[j] t_e
                ones = torch.ones((x.shape[0], 1), dtype=torch.float32, device=x.device)
                grad_r, _ = segment_reduce(pattern.csr, schedule, col_scale[:, None] if col_scale is not None
                                           else ones, num_out_rows=pattern.csr.num_rows, reduce=SUM, weight=u)
                grad_r = grad_r.flatten().to(row_scale.dtype)
            if need_c:  # dc[j] = sum over edges out of j of w_e r[i] t_e
                ones = torch.ones((pattern.csr.num_rows, 1), dtype=torch.float32, device=x.device)
                grad_c, _ = segment_reduce(csc, segment_schedule(csc.rowptr, pattern.chunk), row_scale[:, None]
                                           if row_scale is not None else ones, num_out_rows=x.shape[0],
                                           reduce=SUM, weight=u)
                grad_c = grad_c.flatten().to(col_scale.dtype)
        return grad_x, grad_w, grad_r, grad_c, None, None


# --------------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------------


def _inverse_sqrt_degree(pattern: SparsePattern, weight: torch.Tensor | None, device) -> torch.Tensor:
    """``deg^-1/2 (N,)`` float32 from the weighted in-degree (0 where the degree is 0)."""
    if weight is None:
        degree = (pattern.csr.rowptr[1:] - pattern.csr.rowptr[:-1]).to(torch.float32)
    else:  # deg = A @ 1 through this very kernel: deterministic, and differentiable in the weights
        ones = torch.ones((pattern.num_cols, 1), dtype=torch.float32, device=device)
        degree = _CsrAggregate.apply(ones, weight.to(torch.float32), None, None, pattern, False).flatten()
    positive = degree > 0
    return torch.where(positive, torch.where(positive, degree, 1.0).rsqrt(), 0.0)  # safe gradient at 0


def csr_aggregate(x: torch.Tensor, csr: Compressed, csc: Compressed | None = None, *,
                  edge_weight: torch.Tensor | None = None, reduce: str = "sum", normalize: str | None = None,
                  edges_per_program: int | None = None, check_indices: bool = True,
                  num_cols: int | None = None) -> torch.Tensor:
    """``out[i] = REDUCE over k in row i of c_k * x[csr.col[k]]``, differentiable in ``x`` and ``edge_weight``.

    Args:
        x: node features ``(N, F)``, float16/bfloat16/float32.
        csr: rows = destinations (``Graph.csr()``, a :class:`reference.graph.Compressed`): ``rowptr (N+1,)``,
            ``col (E,)`` sources, ``perm (E,)`` edge ids.
        csc: rows = sources (``Graph.csc()``), used by the backward; derived from ``csr`` when None.
        edge_weight: ``(E,)`` in original edge order (indexed through ``perm``), ``x``'s dtype or float32.
        reduce: ``"sum"``, ``"mean"`` or ``"max"``.
        normalize: None or ``"gcn"`` (``c_e = deg^-1/2[i] w_e deg^-1/2[j]``, deg = weighted in-degree).
        edges_per_program: the segment length of the row schedule (default 256); small values force
            row splitting (tests use it).
        check_indices: check the index values (monotonic rowptr, ranges); skip only for layouts built
            by :class:`reference.graph.Graph`, which validated its edges on construction.
        num_cols: the rows of ``x`` when the layout is rectangular (``R`` output rows over ``num_cols``
            inputs, e.g. a graph readout: rows = graphs, ``col`` = their nodes); default: square.
            ``normalize="gcn"`` needs a square layout.

    Shapes:
        x ``(num_cols, F)`` -> ``(R, F)`` in ``x``'s dtype (``R = num_cols = N`` for a graph).
    """
    validate_reduce(reduce)
    if normalize not in (None, "gcn"):
        raise ValueError(f"normalize must be None or 'gcn', got {normalize!r}")
    check_layout_type("csr", csr)
    num_nodes = csr.num_rows
    if num_cols is not None and (isinstance(num_cols, bool) or not isinstance(num_cols, int) or num_cols < 0):
        raise ValueError(f"num_cols must be a non-negative int or None, got {num_cols!r}")
    num_cols = num_nodes if num_cols is None else num_cols
    if normalize == "gcn" and num_cols != num_nodes:
        raise ValueError(f"normalize='gcn' needs a square layout, got {num_nodes} rows over num_cols={num_cols}")
    _check_features("x", x, num_cols)
    check_int32_sizes(csr.rowptr.dtype, max(num_nodes, num_cols), x.shape[1])
    validate_layouts(csr, csc, num_nodes, num_cols, check_values=check_indices)
    check_on_layout_device("x", x, csr)
    if edge_weight is not None:
        if not isinstance(edge_weight, torch.Tensor) or not edge_weight.is_floating_point():
            raise TypeError("edge_weight must be a floating-point tensor or None")
        if edge_weight.dtype not in (x.dtype, torch.float32):
            raise TypeError(f"edge_weight must have x's dtype {x.dtype} or float32, got {edge_weight.dtype}")
        if tuple(edge_weight.shape) != (csr.num_edges,):
            raise ValueError(f"edge_weight must have shape (E,) = ({csr.num_edges},), got {tuple(edge_weight.shape)}")
        if edge_weight.device != x.device:
            raise ValueError(f"edge_weight must be on x's device {x.device}, got {edge_weight.device}")
        edge_weight = edge_weight.contiguous()
    chunk = check_edges_per_program(edges_per_program)

    pattern = SparsePattern(csr, csc, num_cols, chunk)
    row_scale = col_scale = None
    if normalize == "gcn":
        row_scale = col_scale = _inverse_sqrt_degree(pattern, edge_weight, x.device)
    if reduce == "mean":
        count = (csr.rowptr[1:] - csr.rowptr[:-1]).clamp_min(1).to(torch.float32)  # (N,) empty rows: 0 / 1
        row_scale = 1.0 / count if row_scale is None else row_scale / count
    return _CsrAggregate.apply(x, edge_weight, row_scale, col_scale, pattern, reduce == "max")


def _triton_aggregate(graph, x, *, reduce, edge_weight, normalize):
    """The ``"triton"`` backend of ``reference.gnn.aggregate`` (arguments validated there)."""
    if x.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(f"the triton aggregation backend supports {SUPPORTED_DTYPES}, not {x.dtype}")
    return csr_aggregate(x, graph.csr(), graph.csc(), edge_weight=edge_weight, reduce=reduce,
                         normalize=normalize, check_indices=False)


def _triton_readout(x, batch, *, num_graphs, reduce):
    """The ``"triton"`` backend of ``reference.graph_embedding.readout``: graph pooling as a rectangular CSR
    aggregation whose rows are the graphs and whose columns are their nodes (arguments validated there)."""
    if x.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(f"the triton readout backend supports {SUPPORTED_DTYPES}, not {x.dtype}")
    nodes = torch.arange(x.shape[0], dtype=batch.dtype, device=batch.device)
    compressed = coo_to_compressed(batch, nodes, num_graphs)  # rows = graphs
    return csr_aggregate(x, compressed, reduce=reduce, num_cols=x.shape[0], check_indices=False)



# --------------------------------------------------------------------------------------------------
# What `fusebench inspect` compiles
# --------------------------------------------------------------------------------------------------

def _argument_types(feature: str, index: str) -> dict[str, str]:
    """The compile type of every argument of the aggregation's kernels, by role (see ``spec_for``)."""
    return {**dict.fromkeys(("x_ptr", "w_ptr", "g_ptr", "gw_ptr", "out_ptr"), f"*{feature}"),  # the features
            **dict.fromkeys(("rscale_ptr", "cscale_ptr", "part_ptr", "u_ptr"), "*fp32"),  # scales, float32 partials
            **dict.fromkeys((*INDEX_POINTERS, "*arg*_ptr"), f"*{index}"),  # the layout, schedule and arg-max edges
            "num_*": "i32", "stride_*": "i32"}


def compile_specs() -> list[CompileSpec]:
    """Every configuration the launchers can pick, for each feature dtype and index dtype.

    Each tile configuration is compiled with every optional operand switched on (weights, both scale
    vectors): the variant with the most loads and live registers, whose other specializations only drop
    code. The reduction mode (sum, max, masked sum of the max backward) is compiled separately.
    """
    specs = []
    for dtype in SUPPORTED_DTYPES:
        for index_dtype in INDEX_DTYPES:
            ft, it = TRITON_DTYPE[dtype], TRITON_DTYPE[index_dtype]
            types = _argument_types(ft, it)
            for block_f in FEATURE_TILES:
                block_e = edge_tile(block_f, half_int64=dtype.itemsize == 2 and index_dtype == torch.int64)
                label = f"{ft} {it} E{block_e} F{block_f} w{NUM_WARPS}"
                for reduce, name in ((SUM, "sum"), (MAX, "max"), (MASKED_SUM, "max_bwd")):
                    constexprs = {"REDUCE": reduce, "HAS_W": True, "HAS_RSCALE": True, "HAS_CSCALE": True,
                                  "BLOCK_E": block_e, "BLOCK_F": block_f, "CHUNK": DEFAULT_EDGES_PER_PROGRAM}
                    specs.append(spec_for(f"spmm.segment_{name}", segment_kernel, constexprs, types,
                                          num_warps=NUM_WARPS, num_stages=1, config=label,
                                          launch_keys=("x_ptr", "rowptr_ptr", "REDUCE", "BLOCK_E", "BLOCK_F",
                                                       "CHUNK")))
                for is_max in (False, True):
                    specs.append(spec_for(f"spmm.combine_{'max' if is_max else 'sum'}", combine_kernel,
                                          {"IS_MAX": is_max, "BLOCK_S": BLOCK_S, "BLOCK_F": block_f}, types,
                                          num_warps=NUM_WARPS, num_stages=1, config=label,
                                          launch_keys=("out_ptr", "split_row_ptr", "IS_MAX", "BLOCK_F")))
                grad_block_e = _grad_edge_tile(block_f, int64=index_dtype == torch.int64)
                grad_label = f"{ft} {it} E{grad_block_e} F{block_f} w{NUM_WARPS}"
                for has_arg in (False, True):
                    constexprs = {"HAS_ARG": has_arg, "HAS_W": True, "HAS_RSCALE": True, "HAS_CSCALE": True,
                                  "WRITE_GW": True, "WRITE_U": True, "BLOCK_E": grad_block_e, "BLOCK_F": block_f,
                                  "CHUNK": DEFAULT_EDGES_PER_PROGRAM}
                    specs.append(spec_for(f"spmm.edge_grad{'_max' if has_arg else ''}", _edge_grad_kernel,
                                          constexprs, types, num_warps=NUM_WARPS, num_stages=1, config=grad_label,
                                          launch_keys=("x_ptr", "rowptr_ptr", "HAS_ARG", "BLOCK_E", "BLOCK_F",
                                                       "CHUNK")))
    return specs
