"""`fusebench run`: every available attention backend on small cases, with its agreement and its time.

The benchmark suites (suites/benchmarks, suites/asv) measure properly; this is the quick whole-product
pass a newcomer runs first: does each backend compute the spec, and roughly how fast is it here.
Triton kernels under the CPU interpreter (TRITON_INTERPRET=1) are numpy emulations: their time is not
a kernel time and is never printed as one.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from fusebench.agreement import check
from fusebench.inputs import random_tensor, seed_for
from reference.attention import attention_backends, scaled_dot_product_attention

# (name, B, Hq, Hkv, Nq, Nk, D, causal): CPU-sized, awkward lengths on purpose.
CASES = [
    ("self-attn", 2, 4, 4, 97, 97, 64, False),
    ("causal-gqa", 1, 8, 2, 113, 113, 64, True),
    ("cross-attn", 2, 4, 4, 17, 203, 32, False),
]


def _interpreted(backend: str) -> bool:
    return backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"


def _median_ms(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(dtypes: list[str], backends: list[str] | None = None) -> int:
    backends = backends or attention_backends()
    print(f"torch {torch.__version__}; backends: {', '.join(backends)}; device: cpu")
    print(f"{'case':<12} {'backend':<10} {'dtype':<9} {'verdict':<9} {'ratio':>7} {'p50 ms':>10}")
    failures = 0
    for name, b, hq, hkv, nq, nk, d, causal in CASES:
        shapes = {"q": (b, hq, nq, d), "k": (b, hkv, nk, d), "v": (b, hkv, nk, d)}
        gold_inputs = {key: random_tensor(s, seed=seed_for("run", name, key), dtype=torch.float64)
                       for key, s in shapes.items()}
        gold = scaled_dot_product_attention(**gold_inputs, is_causal=causal)
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            inputs = {key: t.to(dtype) for key, t in gold_inputs.items()}
            baseline = scaled_dot_product_attention(**inputs, is_causal=causal)
            for backend in backends:
                call = lambda: scaled_dot_product_attention(**inputs, is_causal=causal, backend=backend)  # noqa: B023
                try:
                    verdict = check(call(), gold, baseline, name=f"{name}/{backend}")
                except NotImplementedError as error:
                    print(f"{name:<12} {backend:<10} {dtype_name:<9} {'n/a':<9} {'':>7} {'':>10}  {error}")
                    continue
                failures += not verdict.passed
                timing = "interpreted" if _interpreted(backend) else f"{_median_ms(call):.3f}"
                state = "agrees" if verdict.passed else "DISAGREES"
                print(f"{name:<12} {backend:<10} {dtype_name:<9} {state:<9} {verdict.ratio:>7.3f} {timing:>10}")
    print("ratio = error against float64 gold / allowed error (<= 1 agrees); times are CPU wall-clock medians.")
    return 1 if failures else 0
