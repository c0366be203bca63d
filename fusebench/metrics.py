"""Measurement probes: latency quantiles, peak memory, throughput and the share of the device's peak.

* **Latency**: quantiles p20, p50, p80 in milliseconds. On a GPU, :func:`triton.testing.do_bench`
  times with CUDA events after a warm-up and flushes the L2 cache between runs (so a small case does
  not time a warm cache). On a CPU, pytest-benchmark's timer (``time.perf_counter``), one warm-up call,
  then samples of at least a millisecond each within a time budget. ``do_bench`` is never called on
  the CPU, and nothing here times a Triton kernel under the CPU interpreter: that would be the time of
  a numpy emulation, not of a kernel.
* **Peak memory** (bytes above what was allocated before the call): on a GPU,
  ``torch.cuda.max_memory_allocated`` after resetting the peak. On a CPU there is no allocator
  high-water mark, so :class:`TensorMemoryTracker` counts it: the peak, during the call, of the bytes
  held by tensor storages that torch operators created in the call (tracked by a dispatch mode,
  released when the storage is freed). It sees what torch allocates (activations, workspaces that
  are tensors, autograd's saved tensors) and not memory a library allocates outside torch.
* **Throughput**: TFLOP/s from a case's FLOP model, GB/s from its byte model (both in
  :mod:`fusebench.cases`); quantiles of throughput come from the opposite quantiles of time.
* **Share of peak**: throughput over the device's ceiling. Ceilings measured on the device
  (:func:`measure_ceilings`: a large device-to-device copy, a large matmul per dtype) are preferred;
  otherwise the spec-sheet numbers in :data:`PEAKS` (dense, no sparsity).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["Quantiles", "time_cpu", "time_gpu", "measure_time", "peak_memory", "TensorMemoryTracker",
           "throughput", "DevicePeak", "PEAKS", "spec_peak", "measure_ceilings", "QUANTILES"]

QUANTILES = (0.2, 0.5, 0.8)


@dataclass(frozen=True)
class Quantiles:
    p20: float
    p50: float
    p80: float

    @classmethod
    def of(cls, samples) -> Quantiles:
        if len(samples) == 0:
            raise ValueError("Quantiles.of needs at least one sample")
        values = torch.quantile(torch.tensor(list(samples), dtype=torch.float64),
                                torch.tensor(QUANTILES, dtype=torch.float64))
        return cls(*(float(v) for v in values))

    @classmethod
    def constant(cls, value: float) -> Quantiles:
        return cls(value, value, value)

    @property
    def spread(self) -> float:
        """(p80 - p20) / p50: the relative run-to-run spread of the samples."""
        return (self.p80 - self.p20) / self.p50 if self.p50 else float("nan")


def throughput(work: float, time_ms: Quantiles, scale: float) -> Quantiles:
    """``work / time / scale`` per quantile; the fastest time (p20) gives the highest throughput (p80)."""
    rate = lambda ms: work / (ms * 1e-3) / scale if ms > 0 else float("inf")
    return Quantiles(rate(time_ms.p80), rate(time_ms.p50), rate(time_ms.p20))


# --------------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------------


def time_cpu(fn, *, budget_s: float = 0.15, min_samples: int = 5, max_samples: int = 200) -> tuple[Quantiles, int]:
    """(quantiles in ms, number of samples) of ``fn()`` timed with pytest-benchmark's timer.

    One warm-up call; calls shorter than a millisecond are looped inside a sample so the timer's
    resolution does not matter; samples are drawn until ``budget_s`` of wall-clock time is spent and
    at least ``min_samples`` exist (the budget is checked against the clock, not predicted, so a loaded
    machine costs more samples' time, not more samples).
    """
    from pytest_benchmark.timers import default_timer as timer

    fn()  # warm-up: first-call allocations, lazy initialisation
    start = timer()
    fn()
    once = max(timer() - start, 1e-9)
    inner = max(1, int(1e-3 / once))
    samples = []
    began = timer()
    while len(samples) < max_samples and (len(samples) < min_samples or timer() - began < budget_s):
        start = timer()
        for _ in range(inner):
            fn()
        samples.append((timer() - start) / inner * 1e3)
    return Quantiles.of(samples), len(samples)


def time_gpu(fn, *, warmup_ms: int = 25, rep_ms: int = 100) -> tuple[Quantiles, int]:
    """(quantiles in ms, approximate number of samples) from ``triton.testing.do_bench``.

    do_bench synchronizes, warms up, zeroes a 256 MB buffer between runs to flush the L2 cache, and
    times each run with CUDA events.
    """
    import triton.testing

    p20, p50, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
    return Quantiles(p20, p50, p80), max(1, int(rep_ms / max(p50, 1e-3)))


def measure_time(fn, device: str) -> tuple[Quantiles, int]:
    """Time ``fn`` the right way for ``device`` ("cuda" or "cpu")."""
    return time_gpu(fn) if str(device).startswith("cuda") else time_cpu(fn)


# --------------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------------


class TensorMemoryTracker(TorchDispatchMode):
    """A dispatch mode that records the peak bytes held by storages created inside it.

    Each storage an operator returns is counted once (views share their base's storage) and
    uncounted when the storage is freed, so ``peak`` is the high-water mark of bytes torch allocated
    during the ``with`` block and still held at once.
    """

    def __init__(self):
        super().__init__()
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in _dense_parts(tree_leaves(out)):
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._live:
                continue
            self._live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._release, key)
        return out


def _dense_parts(leaves):
    """The strided tensors holding the data of ``leaves`` (a sparse tensor's indices and values)."""
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            continue
        if leaf.layout == torch.strided:
            yield leaf
        elif leaf.layout == torch.sparse_coo:
            yield from (leaf._indices(), leaf._values())
        elif leaf.layout == torch.sparse_csr:
            yield from (leaf.crow_indices(), leaf.col_indices(), leaf.values())


def peak_memory(fn, device: str) -> tuple[int, str]:
    """(bytes, what was measured): the peak memory ``fn()`` allocates above what was live before."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base), "torch.cuda.max_memory_allocated above the baseline"
    with TensorMemoryTracker() as tracker:
        fn()
    return int(tracker.peak), "peak bytes of tensor storages torch allocated during the call (CPU dispatch tracking)"


# --------------------------------------------------------------------------------------------------
# Device peaks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevicePeak:
    """Dense (no 2:4 sparsity) tensor throughput per dtype in TFLOP/s, and memory bandwidth in GB/s."""

    pattern: str  # a regular expression matched against torch.cuda.get_device_name()
    tflops: dict
    bandwidth_gbps: float
    source: str


# Spec-sheet numbers from NVIDIA's datasheets. float32 is the non-tensor-core rate (torch keeps TF32 off
# for matmuls by default). Ordered most specific first: "H100 PCIe" must match before "H100".
PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak(r"H100.*PCIe", {"bfloat16": 756.0, "float16": 756.0, "float32": 51.2}, 2000.0,
               "spec sheet: H100 PCIe"),
    DevicePeak(r"H100", {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9}, 3350.0, "spec sheet: H100 SXM5"),
    DevicePeak(r"H200", {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9}, 4800.0, "spec sheet: H200 SXM"),
    DevicePeak(r"A100.*40GB", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}, 1555.0,
               "spec sheet: A100 40GB"),
    DevicePeak(r"A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}, 2039.0, "spec sheet: A100 80GB SXM"),
    DevicePeak(r"\bL4\b", {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3}, 300.0, "spec sheet: L4"),
)


def spec_peak(device_name: str) -> DevicePeak | None:
    """The spec-sheet peaks for a GPU name, or None for a device not in the table (and for CPUs)."""
    for peak in PEAKS:
        if re.search(peak.pattern, device_name):
            return peak
    return None


def _copy_ms(n_bytes: int) -> float:
    buffers = torch.empty(2, n_bytes, dtype=torch.uint8, device="cuda")
    return time_gpu(lambda: buffers[1].copy_(buffers[0]))[0].p50


def measure_ceilings(dtypes=("bfloat16",)) -> dict[str, tuple[float, str]]:
    """Ceilings measured on the current GPU: ``{"bandwidth_gbps": (value, how), "tflops:<dtype>": ...}``.

    Bandwidth: a 1 GiB device-to-device copy (read + write, 2 GiB moved). Compute: an 8192^3 matmul
    (4096^3 in float32), 2 n^3 FLOPs. Both timed with do_bench, median.
    """
    n_bytes = 1 << 30
    gbps = 2 * n_bytes / (_copy_ms(n_bytes) * 1e-3) / 1e9
    ceilings = {"bandwidth_gbps": (gbps, "1 GiB device copy (do_bench median)")}
    for name in dtypes:
        n = 4096 if name == "float32" else 8192
        a = torch.randn(n, n, device="cuda").to(getattr(torch, name))
        b = torch.randn(n, n, device="cuda").to(getattr(torch, name))
        q, _ = time_gpu(lambda: a @ b)  # noqa: B023
        ceilings[f"tflops:{name}"] = (2 * n**3 / (q.p50 * 1e-3) / 1e12, f"{n}^3 matmul (do_bench median)")
    return ceilings
