"""The agreement policy itself (fusebench/agreement.py): it must pass the right answer and fail wrong ones.

Wrong candidates are realistic kernel bugs: an off-by-one causal mask, a missing softmax scale, a
dropped key tile. Each must fail the policy at every dtype, or the policy would let such kernels pass.
"""

import math

import pytest
import torch

from fusebench.agreement import BaselineIsCandidate, Cancellation, assert_agrees, check, check_baseline
from fusebench.inputs import GuardedTensor, poisoned, random_tensor
from reference.attention import causal_mask, scaled_dot_product_attention

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _qkv(seed, dtype, b=2, h=3, n=37, d=32):
    return [random_tensor((b, h, n, d), seed=seed + i, dtype=dtype) for i in range(3)]


def _runs(seed, dtype, candidate_fn):
    gold = candidate_fn(*_qkv(seed, torch.float64), reference=True)
    baseline = candidate_fn(*_qkv(seed, dtype), reference=True)
    candidate = candidate_fn(*_qkv(seed, dtype), reference=False)
    return candidate, gold, baseline


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_correct_reordered_candidate_passes(seed, dtype):
    # torch's SDPA computes the same function in another order: it must agree.
    def sdpa(q, k, v, reference):
        if reference:
            return scaled_dot_product_attention(q, k, v, is_causal=True)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    verdict = assert_agrees(*_runs(seed, dtype, sdpa))
    assert 0 <= verdict.ratio <= 1


def _off_by_one_causal(q, k, v, reference):
    n = q.shape[2]
    keep = causal_mask(n, n) if reference else causal_mask(n, n).tril(-1) | torch.eye(n, dtype=torch.bool).roll(1, 1)
    return scaled_dot_product_attention(q, k, v, attn_mask=keep)


def _missing_scale(q, k, v, reference):
    return scaled_dot_product_attention(q, k, v, scale=None if reference else 1.0)


def _dropped_last_key_tile(q, k, v, reference):
    keep = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool)
    if not reference:
        keep[:, 32:] = False  # a kernel that forgot the ragged last tile
    return scaled_dot_product_attention(q, k, v, attn_mask=keep)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wrong", [_off_by_one_causal, _missing_scale, _dropped_last_key_tile],
                         ids=["off-by-one-mask", "missing-scale", "dropped-tile"])
def test_a_wrong_candidate_fails(seed, dtype, wrong):
    verdict = check(*_runs(seed, dtype, wrong))
    assert not verdict.passed, verdict.describe()
    assert verdict.ratio > 1
    with pytest.raises(AssertionError, match="DISAGREES"):
        assert_agrees(*_runs(seed, dtype, wrong))


def test_nan_where_gold_is_finite_never_passes(seed):
    gold = random_tensor((4, 5), seed=seed, dtype=torch.float64)
    candidate = gold.to(torch.float16)
    candidate[2, 3] = float("nan")
    verdict = check(candidate, gold, gold.to(torch.float16))
    assert not verdict.passed and verdict.worst_index == (2, 3) and math.isinf(verdict.ratio)
    candidate[2, 3] = float("inf")
    assert not check(candidate, gold, gold.to(torch.float16)).passed


def test_an_unwritten_output_is_caught_by_poison(seed):
    gold = random_tensor((3, 8), seed=seed, dtype=torch.float64)
    out = poisoned((3, 8), dtype=torch.float32)
    out[:, :7] = gold[:, :7].float()  # a "kernel" that never wrote the last column
    verdict = check(out, gold)
    assert not verdict.passed and verdict.worst_index[1] == 7


def test_the_verdict_reports_the_worst_element(seed):
    gold = random_tensor((6, 7), seed=seed, dtype=torch.float64)
    candidate = gold.clone().float()
    candidate[4, 1] += 0.5 * gold.abs().max().float()
    verdict = check(candidate, gold)
    assert verdict.worst_index == (4, 1) and not verdict.passed and not bool(verdict)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_needs_a_baseline(dtype):
    gold = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs the baseline"):
        check(gold.to(dtype), gold)


def test_the_rounding_floor_passes_a_correctly_rounded_result_and_no_more(seed):
    gold = random_tensor((64,), seed=seed, dtype=torch.float64)
    exact = gold.to(torch.bfloat16)  # correctly rounded: the best any bf16 result can be
    assert check(exact, gold, baseline=exact.clone()).passed  # equal values, but exact: not refused
    # Baseline error <= half an ulp, floor = eps * max|gold|, so the allowance is at most
    # 2 * eps * max|gold|; moving the largest element by 8 * eps * max|gold| must fail.
    scale = gold.abs().max()
    far = exact.clone()
    worst = int(gold.abs().argmax())
    far[worst] = (gold[worst] + gold[worst].sign() * 8 * torch.finfo(torch.bfloat16).eps * scale).to(torch.bfloat16)
    assert not check(far, gold, baseline=exact).passed


def test_shape_and_dtype_mistakes_raise():
    gold = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        check(torch.zeros(4), gold)
    with pytest.raises(TypeError, match="gold must be float64"):
        check(torch.zeros(3), gold.float())
    with pytest.raises(TypeError, match="floating"):
        check(torch.zeros(3, dtype=torch.int32), gold)


def test_random_inputs_are_fresh_reproducible_and_never_zero():
    a = random_tensor((1000,), seed=1, dtype=torch.float16)
    assert torch.equal(a, random_tensor((1000,), seed=1, dtype=torch.float16))
    assert not torch.equal(a, random_tensor((1000,), seed=2, dtype=torch.float16))
    assert (a != 0).all() and (random_tensor((1000,), seed=3, dtype=torch.bfloat16, distribution="uniform") != 0).all()


def test_guard_zones_catch_out_of_bounds_writes_and_reads():
    values = torch.arange(1.0, 11.0)
    guarded = GuardedTensor(values, margin=8)
    assert torch.equal(guarded.tensor, values)
    guarded.assert_intact()
    # A read one element past the end picks up NaN from the margin...
    past_end = guarded.buffer[guarded.margin + values.numel()]
    assert torch.isnan(past_end)
    # ...and a write one element past the end is reported.
    guarded.buffer[guarded.margin + values.numel()] = 1.0
    with pytest.raises(AssertionError, match="after the tensor at offsets \\[0\\]"):
        guarded.assert_intact("out")
    indices = GuardedTensor(torch.tensor([0, 1, 2], dtype=torch.int32), margin=2)
    indices.buffer[0] = 5
    with pytest.raises(AssertionError, match="before"):
        indices.assert_intact()


def test_float32_falls_back_to_the_k_rule_only_where_the_float32_reference_misses_the_bound(seed):
    gold = random_tensor((32,), seed=seed, dtype=torch.float64) * 1e-3
    noise = random_tensor((32,), seed=seed + 1, dtype=torch.float64).sign() * 1e-7  # ~ cancellation residue
    baseline = (gold + noise).float()  # the float32 reference itself misses rtol=1e-4 on ~1e-3 values
    assert not check(baseline, gold).passed
    assert check((gold + 1.5 * noise).float(), gold, baseline).passed  # within 2x the reference's error
    verdict = check((gold + 5 * noise).float(), gold, baseline)
    assert not verdict.passed and verdict.rule == "k-rule"


def _cancelling_sums(seed, terms=64):
    """Rows of ``terms`` float32 values near 1 whose exact sum is ~1e-6: the float32 sum keeps the rounding of the
    terms (about u per term), far above the result's own scale."""
    values = random_tensor((8, terms), seed=seed, dtype=torch.float64, distribution="uniform") * 0.5 + 1
    values[:, terms // 2:] = -values[:, :terms // 2]  # exactly cancelling halves...
    values[:, 0] += random_tensor((8,), seed=seed + 1, dtype=torch.float64) * 1e-6  # ...up to a small remainder
    return values.sum(-1), values.float().sum(-1), Cancellation(terms=terms, term_bound=1.5)


def test_the_cancellation_floor_passes_the_rounding_of_the_terms_and_nothing_more(seed):
    gold, float32_sum, cancels = _cancelling_sums(seed)
    assert not check(float32_sum, gold).passed  # atol = 1e-5 of max|gold| ~ 1e-11: below any float32 sum
    verdict = check(float32_sum, gold, cancels=cancels, name="cancelling sum")
    assert verdict.passed and verdict.rule == "cancellation floor"
    off_by_a_term = float32_sum + 1e-3  # a term's worth of error (a dropped or doubled term) is still caught
    assert not check(off_by_a_term, gold, cancels=cancels).passed
    assert math.isclose(cancels.floor(torch.float32), 64 * 2**-24 * 1.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_cancellation_floor_in_low_precision_is_float32s(seed, dtype):
    # A kernel accumulates in float32; where the low-precision baseline cancels to exactly the gold (a row with one
    # key: the score gradient is exactly 0), the k-rule allows nothing and the float32 rounding of the terms is all
    # that is left of the candidate.
    gold = torch.zeros(8, dtype=torch.float64)
    baseline = gold.to(dtype)  # cancelled exactly: its error, and the k-rule's allowance, are 0
    # what float32 accumulation of 64 terms of up to 1.5 can leave: a few of their ulps
    residue = gold + random_tensor((8,), seed=seed + 1, dtype=torch.float64).sign() * 3 * 2.0**-24 * 1.5
    cancels = Cancellation(terms=64, term_bound=1.5)
    assert not check(residue.to(dtype), gold, baseline).passed
    verdict = check(residue.to(dtype), gold, baseline, cancels=cancels)
    assert verdict.passed and verdict.rule == "cancellation floor"
    assert math.isclose(cancels.floor(dtype), cancels.floor(torch.float32))
    wrong = gold + 1e-4  # far below a low-precision ulp of the terms (~1e-3), far above float32's floor
    assert not check(wrong.to(dtype), gold, baseline, cancels=cancels).passed


def _deep(seed, dtype, layers=16):
    """A deep computation (tanh layers of 32-wide matmuls): its rounding errors are many ulps, never shared by
    two independent runs."""
    x = random_tensor((16, 32), seed=seed, dtype=dtype)
    for i in range(layers):
        x = torch.tanh(x @ random_tensor((32, 32), seed=seed + 1 + i, dtype=dtype, scale=32**-0.5) * 1.5)
    return x


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_candidate_as_its_own_baseline_is_refused(seed, dtype):
    gold, low = _deep(seed, torch.float64), _deep(seed, dtype)
    with pytest.raises(BaselineIsCandidate, match=r"check\(my kernel\): the baseline is the candidate itself"):
        check(low, gold, low, name="my kernel")
    with pytest.raises(BaselineIsCandidate, match="the same tensor"):
        assert_agrees(low, gold, low.view(low.shape), name="a view")
    if dtype in (torch.float16, torch.bfloat16):  # equal low-precision values: the candidate computed twice
        with pytest.raises(BaselineIsCandidate, match=r"check\(again\): the baseline has the candidate's values"):
            assert_agrees(low, gold, low.clone(), name="again")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_shallow_result_may_equal_the_baseline_bit_for_bit(seed, dtype):
    # One rounding of the same exact sum: an independent kernel (float32 accumulation) and the eager reference
    # give the same bits, legitimately; the refusal must not fire.
    a64, b64 = random_tensor((64, 8), seed=seed, dtype=torch.float64), random_tensor((64, 8), seed=seed + 1,
                                                                                     dtype=torch.float64)
    a, b = a64.to(dtype), b64.to(dtype)
    kernel = (a.float() + b.float()).to(dtype)
    assert_agrees(kernel, a64 + b64, a + b, name="shallow sum")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_exact_zeros_shared_with_the_baseline_are_not_a_rerun(seed, dtype):
    # A score gradient whose terms cancel (found by the fuzz tier: one node, self-loops only): kernel and eager
    # reference both give exact zeros, gold holds float64 noise. Zeros carry no rounding fingerprint, so the
    # refusal must not fire; an element that is nonzero in both still reveals a re-run.
    gold = random_tensor((4, 3), seed=seed, dtype=torch.float64) * 1e-16
    zeros = torch.zeros(4, 3, dtype=dtype)
    assert check(zeros, gold, zeros.clone(), gradient=True, name="cancelling sum").passed
    deep_gold, deep = _deep(seed, torch.float64), _deep(seed, dtype)
    deep[0].zero_()
    with pytest.raises(BaselineIsCandidate):
        check(deep, deep_gold, deep.clone(), name="mostly nonzero")


def test_refusal_is_what_stops_an_error_from_passing(seed):
    # The defect the refusal closes: with itself as baseline, an output off by 0.5 would "agree" (float32's
    # k-rule second chance allows twice its own error).
    gold = random_tensor((8, 8), seed=seed, dtype=torch.float64)
    wrong = (gold + 0.5).float()
    assert not check(wrong, gold).passed
    with pytest.raises(BaselineIsCandidate):
        check(wrong, gold, wrong)


def test_a_provider_that_is_the_baseline_is_measured_not_judged(seed):
    gold = (random_tensor((16, 16), seed=seed, dtype=torch.float64) @ random_tensor((16, 16), seed=seed + 1,
                                                                                     dtype=torch.float64))
    base = (random_tensor((16, 16), seed=seed, dtype=torch.bfloat16)
            @ random_tensor((16, 16), seed=seed + 1, dtype=torch.bfloat16))
    verdict = check_baseline(base, gold, name="reference")
    assert verdict.rule == "baseline" and verdict.passed and 0 < verdict.ratio <= 0.5
    assert verdict.baseline_error == verdict.candidate_error == float((base.double() - gold).abs().max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_several_baselines_count_the_largest_of_their_errors(seed, dtype):
    """A composite's baselines (independent same-precision runs): the allowance is k times the worst of them, the
    verdict reports that error, and each baseline is still refused when it is the candidate run again."""
    gold = _deep(seed, torch.float64)
    lucky, unlucky = gold.to(dtype), (gold * (1 + 4 * torch.finfo(dtype).eps)).to(dtype)  # 1/2 ulp and ~4 ulps off
    wrong = (gold * (1 + 16 * torch.finfo(dtype).eps)).to(dtype)  # ~16 ulps: more than k = 2 times either
    both = check(wrong, gold, [lucky, unlucky], name="pooled")
    assert both.baseline_error == check(wrong, gold, unlucky).baseline_error > check(wrong, gold, lucky).baseline_error
    assert not check(wrong, gold, [lucky, unlucky]).passed
    candidate = (gold * (1 + 6 * torch.finfo(dtype).eps)).to(dtype)  # within 2 x the unlucky run, not the lucky one
    assert not check(candidate, gold, lucky).passed
    assert check(candidate, gold, [lucky, unlucky]).passed and check(candidate, gold, (unlucky, lucky)).passed
    with pytest.raises(BaselineIsCandidate):
        check(candidate, gold, [lucky, candidate])
    with pytest.raises(ValueError, match="baseline shape"):
        check(candidate, gold, [lucky, unlucky[:1]])
