"""Measurement probes: latency quantiles, peak memory, throughput and the share of the device's peak.

* **Latency**: quantiles p20, p50, p80 in milliseconds, with every sample kept (:class:`Timing`). On a
  GPU, :func:`triton.testing.do_bench` (``return_mode="all"``) times with CUDA events after a warm-up and
  flushes the L2 cache between runs (so a small case does not time a warm cache), with at least 10
  samples or 100 ms of them; a launch-bound call also gets a CUDA-graph replay figure. On a CPU,
  :class:`torch.utils.benchmark.Timer` (``blocked_autorange``) with an explicit thread count; the load
  average before and after says whether the machine was oversubscribed. Nothing here times a Triton
  kernel under the interpreter: that would be the time of a numpy emulation, not of a kernel.
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

import math
import os
import re
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["Quantiles", "Timing", "timing", "time_cpu", "time_gpu", "measure_time", "peak_memory",
           "TensorMemoryTracker", "throughput", "DevicePeak", "PEAKS", "spec_peak", "measure_ceilings", "QUANTILES"]

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

# A GPU figure needs at least this many samples, or this much sampled time (do_bench's own rep budget).
MIN_GPU_SAMPLES = 10
MIN_GPU_SAMPLED_MS = 100.0
# Below this median a GPU call is launch-bound: the CPU-side launch cost can hide the kernel, so a
# CUDA-graph replay (no launch overhead) is timed beside the eager figure.
LAUNCH_BOUND_MS = 0.1


@dataclass
class Timing:
    """What one timing produced: quantiles of the samples, and what the machine was doing meanwhile.

    ``samples``: every sample in ms (their real count is ``len(samples)``); ``threads``: the torch CPU
    threads the timer ran with; ``load_before``/``load_after``: the 1-minute load average around the
    timing; ``cpus``: the cores this process may use; ``graph``: the CUDA-graph replay's quantiles for a
    launch-bound GPU call (None otherwise); ``timer``: what took the samples.
    """

    quantiles: Quantiles
    samples: list
    timer: str
    threads: int = 0
    load_before: float = float("nan")
    load_after: float = float("nan")
    cpus: int = 0
    graph: Quantiles | None = None
    graph_note: str = ""

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def oversubscribed(self) -> bool:
        """More runnable work than cores while timing: other processes' load plus our threads.

        The load average counts our own threads too once we run, so ``load_after`` is compared as is and
        ``load_before`` (the others alone) with our threads added.
        """
        if not self.cpus or math.isnan(self.load_before):
            return False
        return max(self.load_before + self.threads, self.load_after) > self.cpus + 0.5


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # a platform without a load average
        return float("nan")


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def time_cpu(fn, *, num_threads: int | None = None, min_run_time: float = 0.05, warmup: bool = True) -> Timing:
    """Time ``fn()`` on the CPU with :class:`torch.utils.benchmark.Timer` (``blocked_autorange``).

    The Timer runs ``fn`` with exactly ``num_threads`` torch threads (default: torch's current count),
    picks how many calls make one block so the timer's resolution does not matter, and draws blocks for
    at least ``min_run_time`` seconds; each block's per-call time is one sample. ``warmup``: one call
    first (first-call allocations, lazy initialisation); a caller that has just called ``fn`` skips it.
    """
    from torch.utils.benchmark import Timer

    threads = num_threads or torch.get_num_threads()
    if threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    before = _load()
    if warmup:
        fn()
    measurement = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(
        min_run_time=min_run_time)
    samples = [t * 1e3 for t in measurement.times]
    return Timing(Quantiles.of(samples), samples, "torch.utils.benchmark.Timer.blocked_autorange", threads,
                  before, _load(), _cpus())


def time_gpu(fn, *, warmup_ms: int = 25, rep_ms: int = 100, graph: bool | None = None) -> Timing:
    """Time ``fn()`` on the GPU with ``triton.testing.do_bench(return_mode="all")``.

    do_bench synchronizes, warms up, zeroes a 256 MB buffer between runs to flush the L2 cache, and times
    each run with CUDA events. It sizes its sample count from an estimate; when that leaves fewer than
    :data:`MIN_GPU_SAMPLES` samples and less than :data:`MIN_GPU_SAMPLED_MS` of them, it runs again with a
    longer budget. ``graph``: also time a CUDA-graph replay (``do_bench_cudagraph``); default: when the
    eager median is launch-bound (under :data:`LAUNCH_BOUND_MS`).
    """
    import triton.testing

    before = _load()
    samples = list(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all"))
    if len(samples) < MIN_GPU_SAMPLES and sum(samples) < MIN_GPU_SAMPLED_MS:
        longer = int(math.ceil(1.5 * MIN_GPU_SAMPLES * max(samples)))
        samples += list(triton.testing.do_bench(fn, warmup=warmup_ms, rep=longer, return_mode="all"))
    timing = Timing(Quantiles.of(samples), samples, "triton.testing.do_bench (CUDA events, L2 flushed)",
                    torch.get_num_threads(), before, _load(), _cpus())
    if graph if graph is not None else timing.quantiles.p50 < LAUNCH_BOUND_MS:
        try:
            replay = triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="all")
            timing.graph = Quantiles.of(list(replay))
        except Exception as error:  # noqa: BLE001 -- a call that cannot be captured keeps its eager figure
            timing.graph_note = f"no CUDA-graph figure: {type(error).__name__}: {error}"[:200]
    return timing


def timing(fn, device: str, *, num_threads: int | None = None, warmup: bool = True,
           graph: bool | None = None) -> Timing:
    """Time ``fn`` the right way for ``device`` ("cuda" or "cpu"); do_bench always warms up. ``graph``: see
    :func:`time_gpu` (ignored on the CPU)."""
    if str(device).startswith("cuda"):
        return time_gpu(fn, graph=graph)
    return time_cpu(fn, num_threads=num_threads, warmup=warmup)


def measure_time(fn, device: str) -> tuple[Quantiles, int]:
    """(quantiles in ms, number of samples) of :func:`timing`."""
    measured = timing(fn, device)
    return measured.quantiles, measured.count


# --------------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------------


class TensorMemoryTracker(TorchDispatchMode):
    """A dispatch mode that records the peak bytes held by storages created inside it.

    Each storage an operator returns is counted once and uncounted when the storage is freed, so ``peak`` is the
    high-water mark of bytes torch allocated during the ``with`` block and still held at once; ``largest`` is the
    largest single storage. A result that shares storage with one of the op's inputs (a view, an in-place op) is
    no allocation, whether or not that input was created inside the block.
    """

    def __init__(self):
        super().__init__()
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.largest = 0

    def _release(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _dense_parts(tree_leaves((args, kwargs)))}
        for tensor in _dense_parts(tree_leaves(out)):
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._live or key in inputs:
                continue
            self._live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            self.largest = max(self.largest, storage.nbytes())
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


# Spec-sheet numbers from NVIDIA's datasheets (dense: the datasheets' sparse figures halved). float32 is the
# non-tensor-core rate (torch keeps TF32 off for matmuls by default). Each pattern matches the whole of
# torch.cuda.get_device_name(), so look-alikes do not borrow a neighbour's numbers: "NVIDIA A100 80GB PCIe"
# is not the SXM part, "NVIDIA GH200 480GB" is not an H200, and the NVL parts have their own rows.
PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak(r"H100 PCIe", {"bfloat16": 756.0, "float16": 756.0, "float32": 51.2}, 2000.0,
               "spec sheet: H100 PCIe"),
    DevicePeak(r"H100 80GB HBM3", {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9}, 3350.0,
               "spec sheet: H100 SXM5"),
    DevicePeak(r"H100 NVL", {"bfloat16": 835.5, "float16": 835.5, "float32": 60.0}, 3900.0, "spec sheet: H100 NVL"),
    DevicePeak(r"H200", {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9}, 4800.0, "spec sheet: H200 SXM"),
    DevicePeak(r"H200 NVL", {"bfloat16": 835.5, "float16": 835.5, "float32": 60.0}, 4800.0, "spec sheet: H200 NVL"),
    # Grace Hopper: the H100-class GPU beside a Grace CPU; its own memory (HBM3 96 GB or HBM3e 144 GB) sets the
    # bandwidth, not the H200's.
    DevicePeak(r"GH200 480GB", {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9}, 4000.0,
               "spec sheet: GH200 (96GB HBM3)"),
    DevicePeak(r"GH200 144G HBM3e", {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9}, 4900.0,
               "spec sheet: GH200 (144GB HBM3e)"),
    DevicePeak(r"A100-SXM4-40GB|A100-PCIE-40GB", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}, 1555.0,
               "spec sheet: A100 40GB"),
    DevicePeak(r"A100-SXM4-80GB", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}, 2039.0,
               "spec sheet: A100 80GB SXM"),
    DevicePeak(r"A100 80GB PCIe", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}, 1935.0,
               "spec sheet: A100 80GB PCIe"),
    DevicePeak(r"L4", {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3}, 300.0, "spec sheet: L4"),
)


def spec_peak(device_name: str) -> DevicePeak | None:
    """The spec-sheet peaks for a GPU name, or None for a device not in the table (and for CPUs).

    The name must be one of the table's whole (an optional ``NVIDIA `` prefix aside): a GPU that merely
    contains a table name (a GH200, a future "H200 NVL-2") gets no borrowed peak.
    """
    name = str(device_name).strip().removeprefix("NVIDIA ").strip()
    for peak in PEAKS:
        if re.fullmatch(peak.pattern, name):
            return peak
    return None


def _copy_ms(n_bytes: int) -> float:
    buffers = torch.empty(2, n_bytes, dtype=torch.uint8, device="cuda")
    return time_gpu(lambda: buffers[1].copy_(buffers[0]), graph=False).quantiles.p50


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
        q = time_gpu(lambda: a @ b, graph=False).quantiles  # noqa: B023
        ceilings[f"tflops:{name}"] = (2 * n**3 / (q.p50 * 1e-3) / 1e12, f"{n}^3 matmul (do_bench median)")
    return ceilings
