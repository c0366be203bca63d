"""The agreement policy: when does a candidate compute the same function as the reference?

Every numerical check in fusebench goes through :func:`check` (or :func:`assert_agrees`). Three runs
of the same inputs are compared:

* **gold**: the reference in float64 on the CPU, the best answer we can compute;
* **baseline**: the reference in the candidate's dtype, i.e. what plain eager PyTorch achieves at
  that precision;
* **candidate**: the kernel (or the oracle, in reference tests) under test.

Low precision (float16, bfloat16): FlashAttention's published rule. The candidate passes when

    max|cand - gold| <= k * max|baseline - gold| + floor

with k = 2 for outputs and k = 3 for gradients, and ``floor`` one unit in the last place of the
dtype at the tensor's largest gold magnitude. The floor only matters when the baseline happens to
be exact (tiny reductions); it is the error that rounding the exact answer to the dtype can cost.

float32 and float64: the baseline in these dtypes is often accurate to a few ulps, and a candidate
that sums in a different order (tiles, exp2 instead of exp, online softmax) is legitimately a few
times further off, so "k times the baseline" would punish reordering rather than mistakes. These
dtypes use an element-wise absolute + relative bound instead (see ``_TOLERANCES`` for the reasons
behind each number); the baseline's error is still measured and reported. When a baseline is given and
the candidate misses that bound, the k-rule against the baseline is the second chance: where even the
same-precision reference misses the bound (results that cancel terms far larger than themselves), the
bound measures the problem's conditioning rather than the candidate.

A result that sums terms far larger than itself (a softmax gradient whose terms cancel, a row with one key)
carries the rounding of those terms, not of itself, and a bound relative to its own largest element
(float32's ``atol``; the k-rule's, where the baseline happens to cancel exactly) can collapse below that
rounding. A caller that knows the terms names them with :class:`Cancellation`; the allowed error is then never
below the rounding those terms can leave where they are accumulated (the **cancellation floor**).

A composite (a whole model with the kernel swapped in) rounds in every layer around the kernel, and a tiny
difference in the kernel's output sends the rounding of every later layer another way: the candidate's and the
baseline's errors are then two draws of the same chaotic process, and one baseline's maximum, lucky on a given
input, judges the candidate by chance (the eager model judged against the kernel's run fails as often as the other
way round). Such checks pass several independent same-precision runs as the baseline (a sequence: the eager model,
and the same model around an exact attention rounded to the dtype, the best any kernel could give it); the
baseline's error is the largest of theirs, so the rule asks "no worse than k times what eager PyTorch can be".

The baseline must be a separate run: a candidate passed as its own baseline (the same tensor, or, for
float16/bfloat16, the very same values carrying the very same rounding errors) would be allowed k times
its own error, so any error would pass. :func:`check` refuses such a call; a provider that *is* the
baseline (the eager reference benchmarked as one provider among others) is judged with
:func:`check_baseline`, which says so in its verdict.

The verdict is a number, not only a boolean: ``ratio`` is the candidate's error over the allowed
error (<= 1 passes), so benchmarks can store how close every fast result came to failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Verdict", "check", "check_baseline", "assert_agrees", "BaselineIsCandidate", "Cancellation", "K_OUTPUT",
           "K_GRADIENT", "tolerance_for"]

K_OUTPUT = 2.0  # FlashAttention: output error at most twice eager PyTorch's in the same dtype
K_GRADIENT = 3.0  # gradients go through one more reduction: three times


@dataclass(frozen=True)
class Tolerance:
    """Element-wise ``|cand - gold| <= atol * max|gold| + rtol * |gold|`` (float32 / float64 only)."""

    atol: float  # relative to the tensor's scale max|gold|: cancellation error scales with magnitudes summed
    rtol: float


# float32: unit roundoff u = 6e-8. A reduction of length n accumulates about sqrt(n) * u relative to
# the magnitudes summed (blocked/pairwise summation), so n up to 16k gives ~1e-5; exp2-based online
# softmax and a reordered reduction add a few ulps on top. rtol = 1e-4 leaves ~10x headroom over that,
# yet any real mistake (a missing scale, an off-by-one mask, a dropped tile) shows at 1e-2 or worse.
# atol = 1e-5 of the tensor's scale covers elements whose value cancels to near zero.
# float64: u = 1.1e-16; references and oracles differ only by operation order, which costs ~1e-14 at
# the depths we test. 1e-9 is ~10^7 ulps of headroom and still a million times below the smallest
# algorithmic difference we want to catch (an erf-vs-tanh GELU differs by ~1e-3).
_TOLERANCES = {
    torch.float32: Tolerance(atol=1e-5, rtol=1e-4),
    torch.float64: Tolerance(atol=1e-9, rtol=1e-9),
}
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Cancellation:
    """The cancellation floor: each element of the result is computed from ``terms`` rounded values of at most
    ``term_bound`` in magnitude (after any factor that carries them into the result), however small the result.

    Accumulating them leaves up to ``terms * u * term_bound`` (u = eps / 2, the unit roundoff of the accumulation):
    the standard bound for a dot product of ``terms`` terms to first order (Higham, "Accuracy and Stability of
    Numerical Algorithms", 2002, section 3.1). float16/bfloat16 results are accumulated in float32 (the kernels and
    torch's reductions do), so their floor is float32's: far below their own rounding, it only matters where the
    k-rule's allowance collapses because the baseline cancelled exactly.
    """

    terms: int
    term_bound: float

    def floor(self, dtype: torch.dtype) -> float:
        accumulation = torch.float64 if dtype == torch.float64 else torch.float32
        return self.terms * torch.finfo(accumulation).eps / 2 * self.term_bound


def tolerance_for(dtype: torch.dtype) -> Tolerance | None:
    """The absolute+relative bound for float32/float64, or None for dtypes judged by the k-rule."""
    return _TOLERANCES.get(dtype)


@dataclass(frozen=True)
class Verdict:
    """What :func:`check` measured. ``ratio <= 1`` is a pass; ``worst_index`` is the worst element."""

    name: str
    dtype: torch.dtype
    rule: str  # "k-rule", "abs+rel" or "cancellation floor" (the floor was the bound at the worst element)
    passed: bool
    ratio: float  # candidate error / allowed error
    candidate_error: float  # max |cand - gold|
    baseline_error: float  # max |baseline - gold| (nan when no baseline was given)
    allowed_error: float  # the bound at the worst element
    worst_index: tuple[int, ...]
    reason: str = ""

    def __bool__(self) -> bool:  # a verdict used in `assert` must not be truthy by default
        return self.passed

    def describe(self) -> str:
        state = "agrees" if self.passed else "DISAGREES"
        text = (
            f"{self.name} ({self.dtype}, {self.rule}) {state}: ratio {self.ratio:.3g}, "
            f"max|cand-gold| {self.candidate_error:.3g}, max|base-gold| {self.baseline_error:.3g}, "
            f"allowed {self.allowed_error:.3g}, worst element {self.worst_index}"
        )
        return f"{text}; {self.reason}" if self.reason else text


def _ulp_floor(dtype: torch.dtype, gold_scale: float) -> float:
    # One unit in the last place at the largest gold magnitude: the cost of rounding the exact result.
    return torch.finfo(dtype).eps * max(gold_scale, torch.finfo(dtype).tiny)


def _max_abs(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def _unravel(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


class BaselineIsCandidate(ValueError):
    """A check whose baseline is the candidate itself: it could not fail, so it is refused."""


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    if a.device != b.device or a.numel() == 0:
        return False
    return (a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.storage_offset() == b.storage_offset() and a.stride() == b.stride())


# Independent low-precision runs of a shallow computation (a product of rounded inputs, a max, a sum of two or
# three terms) legitimately agree bit for bit: one rounding of the same exact value. Their error against gold
# is then at most (terms / 2 + 1/2) ulps at the tensor's scale, so up to 2 ulps equal values are expected.
# A deep computation (layers of matmuls and nonlinearities) errs by 3-6 ulps at its scale in float16/bfloat16,
# and two independent summation orders would differ somewhere: equal values there mean one run passed twice.
_SHALLOW_ULPS = 2


def _refuse_self_baseline(candidate: torch.Tensor, baseline: torch.Tensor, gold: torch.Tensor, name: str) -> None:
    """Raise when ``baseline`` is ``candidate``: the same memory, or (low precision) the same values where
    these carry more error than a shallow computation could share by chance (see ``_SHALLOW_ULPS``)."""
    if _same_storage(candidate, baseline):
        raise BaselineIsCandidate(f"check({name}): the baseline is the candidate itself (the same tensor); pass "
                                  "the reference run in the candidate's dtype, or no baseline for float32/float64")
    if candidate.dtype in _LOW_PRECISION and baseline.dtype == candidate.dtype and candidate.numel():
        cand, base = candidate.detach().cpu(), baseline.detach().cpu()
        if not torch.equal(cand, base):
            return
        gold = gold.detach().cpu()
        finite = torch.isfinite(gold)
        # Exact zeros carry no rounding of their own: two correct computations of a sum that cancels both give 0
        # (gold then holds float64 noise such as 5.6e-17), so only nonzero values can reveal a re-run.
        telling = finite & (cand != 0)
        if not telling.any():
            return
        error = _max_abs((base.to(torch.float64) - gold)[telling].nan_to_num(float("inf")))
        if error > _SHALLOW_ULPS * _ulp_floor(candidate.dtype, _max_abs(gold[finite])):
            raise BaselineIsCandidate(
                f"check({name}): the baseline has the candidate's values bit for bit, errors of "
                f"{error:.3g} included: it is the candidate run again, not the reference in its dtype; a "
                "provider that is the baseline is judged with check_baseline")


def check(
    candidate: torch.Tensor,
    gold: torch.Tensor,
    baseline: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    gradient: bool = False,
    name: str = "output",
    cancels: Cancellation | None = None,
) -> Verdict:
    """Judge ``candidate`` against ``gold`` (float64) with the policy above.

    Args:
        candidate: the result under test, any floating dtype; its dtype picks the rule.
        gold: the float64 reference result, same shape.
        baseline: the reference run in the candidate's dtype; required for float16/bfloat16. A sequence of
            independent same-precision runs (a composite's, see above) counts the largest of their errors.
        gradient: use k = 3 (gradients) instead of k = 2 (outputs).
        name: what is being compared, for messages.
        cancels: the terms each element sums, when they may cancel: the allowed error is then at least their
            cancellation floor (see :class:`Cancellation`).
    """
    if not isinstance(candidate, torch.Tensor) or not isinstance(gold, torch.Tensor):
        raise TypeError("check: candidate and gold must be tensors")
    if candidate.shape != gold.shape:
        raise ValueError(f"check({name}): candidate shape {tuple(candidate.shape)} != gold shape {tuple(gold.shape)}")
    if gold.dtype != torch.float64:
        raise TypeError(f"check({name}): gold must be float64, got {gold.dtype}")
    if not candidate.is_floating_point():
        raise TypeError(f"check({name}): candidate must be a floating tensor, got {candidate.dtype}")
    dtype = candidate.dtype
    baselines = [] if baseline is None else [baseline] if isinstance(baseline, torch.Tensor) else list(baseline)
    if dtype in _LOW_PRECISION and not baselines:
        raise ValueError(f"check({name}): a {dtype} candidate needs the baseline (the reference in {dtype})")
    for run in baselines:
        if not isinstance(run, torch.Tensor):
            raise TypeError(f"check({name}): a baseline must be a tensor, got {type(run).__name__}")
        if run.shape != gold.shape:
            raise ValueError(f"check({name}): baseline shape {tuple(run.shape)} != gold shape {tuple(gold.shape)}")
        _refuse_self_baseline(candidate, run, gold, name)

    gold = gold.detach().cpu()
    cand = candidate.detach().cpu().to(torch.float64)
    bases = [run.detach().cpu().to(torch.float64) for run in baselines]
    rule = "k-rule" if dtype in _LOW_PRECISION else "abs+rel"

    # Non-finite values: where gold is finite the candidate must be finite; where gold is not finite
    # (inf from an intentional overflow, say) the candidate must carry the very same value.
    gold_finite = torch.isfinite(gold)
    same_nonfinite = (cand == gold) | (torch.isnan(cand) & torch.isnan(gold))
    bad = (gold_finite & ~torch.isfinite(cand)) | (~gold_finite & ~same_nonfinite)
    baseline_error = float("nan")
    if bases and gold.numel():
        baseline_error = max(_max_abs((base - gold)[gold_finite].nan_to_num(float("inf"))) for base in bases)
    if bad.any():
        flat = int(bad.flatten().nonzero()[0])
        return Verdict(name, dtype, rule, False, float("inf"), float("inf"), baseline_error, float("nan"),
                       _unravel(flat, gold.shape), reason=f"candidate is {cand.flatten()[flat].item()} where gold is "
                       f"{gold.flatten()[flat].item()}")
    if gold.numel() == 0:
        return Verdict(name, dtype, rule, True, 0.0, 0.0, baseline_error, 0.0, ())

    error = torch.where(gold_finite, (cand - gold).abs(), torch.zeros_like(gold))
    scale = _max_abs(gold[gold_finite])
    if rule == "k-rule":
        k = K_GRADIENT if gradient else K_OUTPUT
        allowed = k * baseline_error + _ulp_floor(dtype, scale)
        if cancels is not None and cancels.floor(dtype) > allowed:
            rule, allowed = "cancellation floor", cancels.floor(dtype)
        flat = int(error.flatten().argmax())
        ratio = float(error.flatten()[flat]) / allowed
        allowed_at_worst = allowed
    else:
        tol = _TOLERANCES.get(dtype)
        if tol is None:
            raise TypeError(f"check({name}): no agreement rule for dtype {dtype}")
        allowed_elementwise = tol.atol * max(scale, torch.finfo(dtype).tiny) + tol.rtol * gold.abs()
        if cancels is not None:
            allowed_elementwise = allowed_elementwise.clamp(min=cancels.floor(dtype))
        ratios = error / allowed_elementwise
        flat = int(ratios.flatten().argmax())
        ratio = float(ratios.flatten()[flat])
        allowed_at_worst = float(allowed_elementwise.flatten()[flat])
        if cancels is not None and allowed_at_worst == cancels.floor(dtype):
            rule = "cancellation floor"
        if bases and ratio > 1.0:
            # Where the same-precision reference itself misses the element-wise bound (a result that cancels
            # terms far larger than itself, e.g. a softmax gradient), that bound measures the problem's
            # conditioning, not the candidate: FlashAttention's k-rule against that reference applies instead.
            allowed = (K_GRADIENT if gradient else K_OUTPUT) * baseline_error + _ulp_floor(dtype, scale)
            k_flat = int(error.flatten().argmax())
            k_ratio = float(error.flatten()[k_flat]) / allowed
            if k_ratio < ratio:
                rule, ratio, allowed_at_worst, flat = "k-rule", k_ratio, allowed, k_flat
    return Verdict(name, dtype, rule, ratio <= 1.0, ratio, float(error.max()), baseline_error, allowed_at_worst,
                   _unravel(flat, gold.shape))


def check_baseline(baseline: torch.Tensor, gold: torch.Tensor, *, gradient: bool = False,
                   name: str = "output") -> Verdict:
    """The verdict for a provider that is the baseline itself (the eager reference in the candidate's dtype).

    Against itself the k-rule cannot fail, so none is applied: the verdict passes, carries the baseline's
    error against gold, and its ratio is the fraction of the k-rule's allowance that error uses (1 / k for a
    baseline that is not exact), with rule ``"baseline"`` so that no reader mistakes it for a check."""
    base = baseline.detach().cpu().to(torch.float64)
    gold = gold.detach().cpu()
    finite = torch.isfinite(gold)
    error = torch.where(finite, (base - gold).abs().nan_to_num(float("inf")), torch.zeros_like(gold))
    flat = int(error.flatten().argmax()) if error.numel() else 0
    worst = float(error.flatten()[flat]) if error.numel() else 0.0
    allowed = (K_GRADIENT if gradient else K_OUTPUT) * worst + _ulp_floor(baseline.dtype, _max_abs(gold[finite]))
    return Verdict(name, baseline.dtype, "baseline", True, worst / allowed, worst, worst, allowed,
                   _unravel(flat, gold.shape) if error.numel() else (),
                   reason="the provider is the baseline: measured, not judged")


def assert_agrees(candidate, gold, baseline=None, *, gradient: bool = False, name: str = "output",
                  cancels: Cancellation | None = None) -> Verdict:
    """:func:`check`, raising ``AssertionError`` with the full verdict when the candidate fails."""
    verdict = check(candidate, gold, baseline, gradient=gradient, name=name, cancels=cancels)
    if not verdict.passed:
        raise AssertionError(verdict.describe())
    return verdict
