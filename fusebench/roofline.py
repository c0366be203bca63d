"""Analytic roofline: the fastest any kernel could run each benchmark case on each GPU of the table.

For a case, a mode and a dtype, the lower bound on the time is ``max(flops / peak, bytes / bandwidth)``
with the spec-sheet peaks of :data:`fusebench.metrics.PEAKS` (dense tensor-core TFLOP/s per dtype,
memory bandwidth). A measured time over that bound says how far a provider is from the hardware.

The models (``b`` bytes per value of the dtype, ``Hq``/``Hkv`` query/key-value heads, ``D`` the head
dimension, ``Tq``/``Tk`` the query/key tokens of the whole batch):

* **Attention FLOPs**: the catalog's model (:meth:`fusebench.cases.AttentionCase.flops`): forward
  ``4 Hq D`` per (query, key) pair, halved when causal; backward 2.5 forwards; both 3.5.
* **Attention bytes**, the fewest an exact kernel must move (each tensor read or written once):
  forward reads Q, K, V and writes O, and the row log-sum-exp (float32) that a backward needs;
  backward reads Q, K, V, O, dO and LSE and writes dQ, dK, dV; forward+backward is the two passes.
  Q, O, dO, dQ: ``Tq Hq D b``; K, V, dK, dV: ``Tk Hkv D b``; LSE: ``Tq Hq 4``.
* **Graph bytes**: the catalog's byte model (:meth:`fusebench.cases.GraphCase.bytes_moved`, int64
  indices as the providers use), on the edges aggregated: the nominal count plus GCN's self-loops
  (``A + I``), as the runner counts them; GAT's backward reads more than its forward.
* **Graph FLOPs**: one multiply-add per gathered value for the weighted sums (``gcn``: ``2 E F``;
  ``gat``: ``2 E F`` plus about 5 per edge and head for the score, its leaky ReLU, exponential and
  normalisation), one operation per gathered value for ``sum`` and ``max`` (``E F``), plus ``N F``
  divisions for ``mean`` (``E`` with GCN's self-loops); backward as forward (the transposed aggregation),
  forward+backward twice.
  Gathers do not run on tensor cores, so graph FLOPs are bounded by the float32 (CUDA core) rate;
  they are far below it anyway: these ops are memory-bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusebench import cases as catalog
from fusebench.metrics import PEAKS, DevicePeak

__all__ = ["Bound", "attention_bytes", "graph_flops", "work", "bound", "table", "format_table", "peak_named",
           "label", "DEVICES"]

LSE_BYTES = 4  # the log-sum-exp rows are kept in float32 whatever the dtype
INDEX_BYTES = 8  # the providers' edge indices are int64
GAT_SCORE_FLOPS = 5  # per edge and head: add the two terms, leaky ReLU, exp, normalise (subtract max, divide)
_VALUE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def label(peak: DevicePeak) -> str:
    """The table's short name of a device: its spec-sheet source without the prefix ("H200 SXM")."""
    return peak.source.removeprefix("spec sheet: ")


DEVICES: tuple[str, ...] = tuple(label(p) for p in PEAKS)  # "H100 PCIe", "H100 SXM5", "H200 SXM", ...


def peak_named(name: str) -> DevicePeak:
    """The table entry called ``name`` (one of :data:`DEVICES`)."""
    for peak in PEAKS:
        if label(peak) == name:
            return peak
    raise ValueError(f"unknown device {name!r}; the table has {', '.join(DEVICES)}")


def _check(mode: str, dtype: str) -> int:
    if mode not in catalog.MODES:
        raise ValueError(f"mode must be one of {catalog.MODES}, got {mode!r}")
    if dtype not in _VALUE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(_VALUE_BYTES)}, got {dtype!r}")
    return _VALUE_BYTES[dtype]


def attention_bytes(case: catalog.AttentionCase, mode: str, dtype: str) -> float:
    """The fewest bytes an exact attention kernel moves for ``mode`` (see the module docstring)."""
    b = _check(mode, dtype)
    tokens_q = sum(case.seqlens) if case.seqlens else case.batch * case.seq_q
    tokens_k = sum(case.seqlens) if case.seqlens else case.batch * case.seq_k
    q_like = tokens_q * case.heads * case.head_dim * b  # Q, O, dO, dQ
    kv_like = tokens_k * case.kv_heads * case.head_dim * b  # K, V, dK, dV
    lse = tokens_q * case.heads * LSE_BYTES
    forward = 2 * q_like + 2 * kv_like + lse  # read Q, K, V; write O, LSE
    backward = 4 * q_like + 4 * kv_like + lse  # read Q, K, V, O, dO, LSE; write dQ, dK, dV
    return {"forward": forward, "backward": backward, "forward+backward": forward + backward}[mode]


def graph_flops(case: catalog.GraphCase, mode: str) -> float:
    """Arithmetic of one aggregation (see the module docstring); backward as forward."""
    _check(mode, "float32")
    e, n, f = case.aggregated_edges, case.num_nodes, case.features
    forward = {"gcn": 2 * e * f, "sum": e * f, "max": e * f, "mean": e * f + n * f,
               "gat": 2 * e * f + GAT_SCORE_FLOPS * e * case.heads}[case.op]
    return forward * (2.0 if mode == "forward+backward" else 1.0)


def work(case, mode: str, dtype: str) -> tuple[float, float]:
    """(FLOPs, fewest bytes) of ``case`` in ``mode`` with values of ``dtype``."""
    if case.suite not in catalog.OP_SUITES:
        raise ValueError(f"{case.name}: a whole model has no FLOP or byte model here (only single ops do)")
    if isinstance(case, catalog.AttentionCase):
        return case.flops(mode), attention_bytes(case, mode, dtype)
    b = _check(mode, dtype)
    return graph_flops(case, mode), case.bytes_moved(mode, value_bytes=b, index_bytes=INDEX_BYTES)


@dataclass(frozen=True)
class Bound:
    case: str
    suite: str
    mode: str
    dtype: str
    device: str
    flops: float
    bytes: float
    compute_ms: float  # flops at the device's peak
    memory_ms: float  # bytes at the device's bandwidth

    @property
    def ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)

    @property
    def bound_by(self) -> str:
        return "compute" if self.compute_ms >= self.memory_ms else "memory"

    @property
    def intensity(self) -> float:
        """FLOPs per byte."""
        return self.flops / self.bytes


def bound(case, mode: str, dtype: str, peak: DevicePeak) -> Bound:
    """The lower-bound time of ``case`` on the device ``peak`` describes."""
    flops, moved = work(case, mode, dtype)
    rate_dtype = dtype if isinstance(case, catalog.AttentionCase) else "float32"  # gathers: CUDA cores
    tflops = peak.tflops.get(rate_dtype)
    if not tflops:
        raise ValueError(f"{peak.source} has no {rate_dtype} peak")
    return Bound(case.name, case.suite, mode, dtype, label(peak), flops, moved,
                 compute_ms=flops / (tflops * 1e12) * 1e3, memory_ms=moved / (peak.bandwidth_gbps * 1e9) * 1e3)


def table(*, modes=catalog.MODES, dtype: str = "bfloat16", devices=DEVICES, case_names=None) -> list[Bound]:
    """Every (real-size case, mode, device) bound."""
    peaks = [peak_named(d) for d in devices]
    return [bound(catalog.get(name), mode, dtype, peak)
            for name in (case_names or [n for s in catalog.OP_SUITES for n in catalog.names(s)])
            for mode in modes for peak in peaks]


def format_table(bounds: list[Bound]) -> str:
    """One line per (case, mode): FLOPs, bytes, intensity, then each device's bound in microseconds."""
    import pandas as pd

    lines: dict[tuple, dict] = {}
    for b in bounds:
        line = lines.setdefault((b.case, b.mode), {"case": b.case, "mode": b.mode, "GFLOP": f"{b.flops / 1e9:.4g}",
                                                   "MB": f"{b.bytes / 1e6:.4g}", "FLOP/B": f"{b.intensity:.3g}"})
        line[f"{b.device} us"] = f"{b.ms * 1e3:.4g} {b.bound_by[0]}"
    table = pd.DataFrame(list(lines.values())).fillna("").to_string(index=False) if lines else "(no case)"
    dtype = bounds[0].dtype if bounds else ""
    legend = (f"lower-bound time max(FLOPs / peak {dtype} TFLOP/s, bytes / bandwidth) on the spec-sheet peaks; "
              "c = compute-bound, m = memory-bound. Real (GPU) case sizes.")
    return "\n".join([table, "", legend])
