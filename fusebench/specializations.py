"""The specializations real launches compile: Triton's own rule applied to the catalog's launches.

A launch of a ``@triton.jit`` kernel compiles a variant specialized to its arguments: an integer or
pointer divisible by 16 gets ``tt.divisibility = 16`` (the compiler may then emit 128-bit loads), an
integer equal to 1 becomes a constant. ``fusebench inspect`` compiles these variants, not guesses, so
this module runs every launch that the benchmarks and correctness tiers make (each attention and graph
case of the catalog at both sizes, forward and backward, in each dtype; the feature widths the graph
correctness tiers cover; the attention cases once more with the launcher deciding its path as on sm_90,
whose forward reads K and V by TMA) through the kernels' launchers with the kernels themselves replaced
by a recorder, and asks Triton's JIT binder (``create_function_from_signature`` with the CUDA backend,
then the JIT's own ``_pack_args``) what each launch would compile. Nothing runs on a GPU and no kernel executes.

The launchers accept CPU tensors only under ``TRITON_INTERPRET=1``, while compiling needs it off, so
:func:`catalog_launches` runs the recording in a fresh interpreter process and caches its answer on
disk under a key of the sources that decide it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# The feature widths the graph correctness tiers (suites/correctness/test_spmm.py, test_gat.py) cover
# beyond the catalog's: one column, below one tile, ragged tiles (7, 20, 100, 602), whole tiles.
CORRECTNESS_WIDTHS = (1, 7, 20, 64, 100, 256, 602)
_CORRECTNESS_NODES = 19  # the graph correctness tiers' node count
ATTENTION_TIER_HEAD_DIMS = (16, 32, 64, 80, 96, 128, 256)


@dataclass(frozen=True)
class Launch:
    """What one launch of one jit function compiles, as Triton's launcher computes it.

    ``signature``: argument -> Triton type (``"*fp16"``, ``"i32"``, ``"constexpr"``) of every argument;
    ``constexprs``: the values of the ``constexpr`` ones (meta-parameters, and integers equal to 1);
    ``divisible``: the arguments given ``tt.divisibility = 16``; ``ones``: the integer arguments that
    were 1 and so became constants; ``case``: the workload that launched it.
    """

    function: str  # "kernels._csr.segment_kernel"
    signature: dict
    constexprs: dict
    divisible: tuple[str, ...]
    ones: tuple[str, ...]
    case: str


def _jit_twin(fn):
    """A JITFunction of ``fn``'s source (also when ``fn`` is the interpreter's), whose binder we ask."""
    from triton.runtime.jit import JITFunction

    if isinstance(fn, JITFunction):
        return fn
    options = {key: fn.kwargs[key] for key in ("do_not_specialize", "do_not_specialize_on_alignment")
               if getattr(fn, "kwargs", {}).get(key)}
    return JITFunction(fn.fn, **options)


def launch_specialization(fn, args: tuple, kwargs: dict, case: str = "") -> Launch:
    """What a launch ``fn[grid](*args, **kwargs)`` compiles on an NVIDIA GPU, by Triton's JIT code.

    ``create_function_from_signature`` builds the binder ``JITFunction.run`` calls on every launch (it
    applies ``native_specialize_impl`` to each argument); ``_pack_args`` turns its answer into the
    signature, constants and attributes ``triton.compile`` receives.
    """
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.runtime.jit import create_function_from_signature

    jit = _jit_twin(fn)
    binder = create_function_from_signature(jit.signature, jit.params, CUDABackend)
    bound_args, specialization, options = binder(*args, **kwargs)
    backend = CUDABackend(GPUTarget("cuda", 90, 32))
    _, signature, constexprs, attrs = jit._pack_args(backend, options, bound_args, specialization, options)
    names = list(signature)
    values = {names[path[0]]: value for path, value in constexprs.items() if len(path) == 1}
    divisible = tuple(names[path[0]] for path, attr in attrs.items()
                      if len(path) == 1 and ["tt.divisibility", 16] in attr)
    ones = tuple(p.name for p in jit.params if not p.is_constexpr and signature[p.name] == "constexpr"
                 and values.get(p.name) == 1)
    plain = {name: value for name, value in values.items() if isinstance(value, (bool, int, float, str, type(None)))}
    return Launch(f"{fn.fn.__module__}.{fn.fn.__name__}", dict(signature), plain, divisible, ones, case)


def _jit_functions() -> dict[str, object]:
    """Every @triton.jit function of every kernels/ module, by qualified name."""
    import kernels

    found = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"kernels.{info.name}")
        for value in vars(module).values():
            fn = getattr(value, "fn", None)
            is_jit = callable(getattr(value, "run", None)) and not hasattr(value, "configs")  # not the autotuner
            if is_jit and getattr(fn, "__module__", "") == module.__name__:
                found[f"{module.__name__}.{fn.__name__}"] = value
    return found


@contextlib.contextmanager
def recording(launches: list, case: str):
    """Within it, every kernels/ jit launch appends its :class:`Launch` to ``launches`` and does not run."""
    functions = _jit_functions()

    def recorder(fn):
        def run(*args, grid, warmup, **kwargs):
            launches.append(launch_specialization(fn, args, kwargs, case))

        return run

    for fn in functions.values():
        fn.run = recorder(fn)
    try:
        yield
    finally:
        for fn in functions.values():
            del fn.run


def _run_case(case, dtype, launches: list, label: str, workload=None) -> None:
    """Forward and backward of the case's ``triton`` provider, recorded."""
    from fusebench import providers

    triton_provider = next(p for p in providers.providers(case.suite) if p.name == "triton")
    wl = workload.cast(dtype) if workload is not None else providers.make_workload(case, dtype=dtype)
    inputs = [t.detach().requires_grad_() for t in wl.inputs.values()]
    with recording(launches, label):
        out = triton_provider.build(case, wl)(*inputs)
        torch.autograd.grad(out, inputs, wl.dout, allow_unused=True)


@contextlib.contextmanager
def _inputs_not_drawn():
    """Within it the catalog's float inputs are ones, not random draws. What a launch compiles depends on
    its arguments' dtypes, shapes, strides, alignment and integer values, never on the tensors' values, and
    drawing the GPU-size cases in float64 was most of the recording's time. (Graphs are still generated:
    their structure decides the launchers' schedules and the integer arguments.)"""
    from fusebench import cases

    drawn = cases.random_tensor

    def ones(shape, *, seed, dtype=torch.float32, device="cpu", **_):
        return torch.ones(shape, dtype=dtype, device=device)

    cases.random_tensor = ones
    try:
        yield
    finally:
        cases.random_tensor = drawn


def record_catalog(sizes=("gpu", "cpu"), dtypes=DTYPES, include_correctness=True) -> list[Launch]:
    """Every distinct launch of the catalog's cases (and the graph correctness tiers' widths)."""
    with _inputs_not_drawn():
        return _record_catalog(sizes, dtypes, include_correctness)


def _record_catalog(sizes, dtypes, include_correctness) -> list[Launch]:
    from fusebench import cases, providers

    launches: list[Launch] = []
    for name in cases.names():
        for size in sizes:
            case = cases.get(name, size)
            if case.suite == "models" or case.suite == "graph" and providers.graph_suite_missing():
                continue  # whole models (their layers call the kernels through the seams) are not recorded yet
            workload = providers.make_workload(case) if case.suite == "graph" else None  # generate the graph once
            for dtype in dtypes:
                _run_case(case, dtype, launches, f"{name}@{size}", workload)
    if include_correctness:
        launches += _record_correctness_widths(dtypes)
        launches += _record_weighted_gradients(dtypes)
        launches += _record_attention_gpu_tier()
    launches += _record_attention_on_hopper(sizes, dtypes, include_correctness)
    return _distinct(launches)


@contextlib.contextmanager
def _as_on_hopper():
    """Within it the attention launcher decides its path as on an sm_90 GPU (``_tma_available``), where the
    forward reads K and V by TMA whenever their layout allows (``_kv_by_tma``); the interpreter never does."""
    from kernels import attention

    available = attention._tma_available
    attention._tma_available = lambda device: True
    try:
        yield
    finally:
        attention._tma_available = available


def _record_attention_on_hopper(sizes, dtypes, include_correctness) -> list[Launch]:
    """The attention launches an sm_90 GPU makes that no other does: the TMA paths (``USE_TMA``)
    of the forward and dQ.
    Everything else such a launch compiles is what the pointer path's recording already holds."""
    from fusebench import cases

    launches: list[Launch] = []
    with _as_on_hopper():
        for name in cases.names():
            for size in sizes:
                case = cases.get(name, size)
                if case.suite == "attention":
                    for dtype in dtypes:
                        _run_case(case, dtype, launches, f"{name}@{size}")
        if include_correctness:
            launches += _record_attention_gpu_tier()
    return [launch for launch in launches if launch.constexprs.get("USE_TMA")]


def _record_weighted_gradients(dtypes) -> list[Launch]:
    """The graph correctness tier's learned edge weights (test_spmm.py's ``weighted`` cases): the only
    launches of the per-edge gradient kernels, which no catalog case (unweighted) makes."""
    from kernels.spmm import csr_aggregate
    from reference.graph_generators import power_law

    launches: list[Launch] = []
    for index_dtype in (torch.int64, torch.int32):
        graph = power_law(_CORRECTNESS_NODES, 3.0, seed=0, index_dtype=index_dtype)
        csr, csc = graph.csr(), graph.csc()
        for reduce in ("sum", "max"):
            for width in CORRECTNESS_WIDTHS:
                label = f"correctness weighted {reduce} F{width} {str(index_dtype).removeprefix('torch.')}"
                for dtype in dtypes:
                    x = torch.randn(graph.num_nodes, width, dtype=dtype, requires_grad=True)
                    weight = torch.rand(graph.num_edges, dtype=dtype, requires_grad=True)
                    with recording(launches, label):
                        out = csr_aggregate(x, csr, csc, edge_weight=weight, reduce=reduce)
                        torch.autograd.grad(out, (x, weight), torch.ones_like(out))
    return launches


def _record_attention_gpu_tier() -> list[Launch]:
    """The attention correctness tier's GPU shape (suites/correctness/test_attention.py,
    ``test_gpu_head_dims_with_masks_and_varied_lengths``): bfloat16, ragged cross-attention with GQA, an
    additive mask broadcast over heads, a key-padding mask, causal; every head dimension it covers."""
    from fusebench.inputs import random_tensor
    from kernels.attention import attention

    launches: list[Launch] = []
    batch, hq, hkv, nq, nk = 2, 8, 2, 1000, 1537
    for d in ATTENTION_TIER_HEAD_DIMS:
        q, k, v = (random_tensor(shape, seed=i, dtype=torch.bfloat16).requires_grad_()
                   for i, shape in enumerate(((batch, hq, nq, d), (batch, hkv, nk, d), (batch, hkv, nk, d))))
        mask = random_tensor((batch, 1, nq, nk), seed=7, dtype=torch.bfloat16)
        padding = torch.rand(batch, nk, generator=torch.Generator().manual_seed(0)) < 0.3
        with recording(launches, f"correctness gpu attention D{d}"):
            out = attention(q, k, v, is_causal=True, attn_mask=mask, key_padding_mask=padding)
            torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    return launches


def _record_correctness_widths(dtypes) -> list[Launch]:
    from dataclasses import replace

    from fusebench import cases, providers

    launches: list[Launch] = []
    for op, template in (("sum", "sum/arxiv-like"), ("max", "max/arxiv-like"), ("gcn", "gcn/cora-like"),
                         ("gat", "gat/cora-like")):
        for width in CORRECTNESS_WIDTHS:
            case = replace(cases.get(template, "cpu"), num_nodes=_CORRECTNESS_NODES, avg_degree=3.0,
                           features=width, heads=1)
            for index_dtype in (torch.int64, torch.int32):
                workload = providers.make_workload(case)
                graph = workload.context["graph"].to(index_dtype=index_dtype)
                workload.context.update(graph=graph)
                label = f"correctness {op} F{width} {str(index_dtype).removeprefix('torch.')}"
                for dtype in dtypes:
                    _run_case(case, dtype, launches, label, workload)
    return launches


def _distinct(launches: list[Launch]) -> list[Launch]:
    """One launch per (function, signature, constants, specialization), its cases joined."""
    merged: dict[str, tuple[Launch, list[str]]] = {}
    for launch in launches:
        key = json.dumps([launch.function, launch.signature, launch.constexprs, launch.divisible], sort_keys=True,
                         default=str)
        first, labels = merged.setdefault(key, (launch, []))
        if launch.case not in labels:
            labels.append(launch.case)
    return [Launch(**{**asdict(first), "case": ", ".join(labels)}) for first, labels in merged.values()]


# --------------------------------------------------------------------------------------------------
# From a fresh interpreter process, cached
# --------------------------------------------------------------------------------------------------


def _sources_key() -> str:
    import importlib.metadata

    digest = hashlib.sha256(importlib.metadata.version("triton").encode() + torch.__version__.encode())
    paths = sorted((ROOT / "kernels").glob("*.py")) + sorted((ROOT / "reference").glob("graph*.py"))
    paths += [ROOT / "fusebench" / name for name in ("cases.py", "providers.py", "inputs.py", "specializations.py")]
    for path in paths:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


# Which launches to record: "all" (both sizes of every attention and graph case, the correctness tiers' shapes)
# or "gpu" (the catalog's gpu-size cases only: what `fusebench gpu-check` benchmarks, recorded in less time).
LAUNCH_SETS = {"all": (("gpu", "cpu"), True), "gpu": (("gpu",), False)}


def catalog_launches(which: str = "all") -> list[Launch]:
    """:func:`record_catalog` of one of :data:`LAUNCH_SETS`, run under ``TRITON_INTERPRET=1`` in a fresh process,
    cached on disk."""
    if which not in LAUNCH_SETS:
        raise ValueError(f"which must be one of {sorted(LAUNCH_SETS)}, got {which!r}")
    cache = Path(os.environ.get("FUSEBENCH_INSPECT_CACHE", Path(tempfile.gettempdir()) / "fusebench-inspect"))
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"launches-{which}-{_sources_key()}.json"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent callers (pytest-xdist workers) wait for one recording
        if not path.exists():
            _record_into(path, which)
    return [Launch(**{**row, "divisible": tuple(row["divisible"]), "ones": tuple(row["ones"])})
            for row in json.loads(path.read_text())]


def _record_into(path: Path, which: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "fusebench.specializations", which], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"recording the catalog's launches failed: {done.stderr.strip()[-2000:]}")
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(done.stdout.strip().splitlines()[-1])
    os.replace(partial, path)  # atomic: a reader without the lock sees all or nothing


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1: the launchers accept CPU tensors only under the interpreter")
    sizes, include_correctness = LAUNCH_SETS[sys.argv[1] if len(sys.argv) > 1 else "all"]
    print(json.dumps([asdict(launch) for launch in record_catalog(sizes, include_correctness=include_correctness)]))
