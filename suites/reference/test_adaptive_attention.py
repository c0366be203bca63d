"""reference/adaptive_attention.py: no library twin, so the paper's formulas are checked directly.

* The general case against the extended softmax written out here, region by region (float64 and float32
  through the agreement policy, gold = the reference in float64).
* The limits, reached through the weights rather than by overriding the gate: a sentinel score far below
  every region's gives beta -> 0 and plain soft attention over the regions (computed independently here);
  far above gives beta -> 1 and the sentinel itself.
* beta in [0, 1] even for huge inputs; gradients finite and correct (gradcheck); padding ignored.
* The sentinel equals torch.nn.LSTMCell's hidden state when it carries the LSTM's output-gate weights.
"""

import pytest
import torch

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.adaptive_attention import AdaptiveAttention, VisualSentinel

D, A = 16, 24  # feature and attention widths


def _module(seed, attention_dim=A):
    torch.manual_seed(seed)
    return AdaptiveAttention(D, attention_dim).double()


def _inputs(seed, b, k, t, dtype=torch.float64):
    return (random_tensor((b, k, D), seed=seed, dtype=dtype), random_tensor((b, t, D), seed=seed + 1, dtype=dtype),
            random_tensor((b, t, D), seed=seed + 2, dtype=dtype))


def _scores(module, features, hidden, sentinel):
    """z (B, T, k) and the sentinel score (B, T), one region and one step at a time, from the weights."""
    w_v, b_v = module.region_proj.weight, module.region_proj.bias
    w_g = module.hidden_proj.weight
    w_s, b_s = module.sentinel_proj.weight, module.sentinel_proj.bias
    w_h = module.score.weight[0]
    b, k, _ = features.shape
    t = hidden.shape[1]
    z = torch.empty(b, t, k, dtype=features.dtype)
    z_s = torch.empty(b, t, dtype=features.dtype)
    for bi in range(b):
        for ti in range(t):
            g = w_g @ hidden[bi, ti]
            for i in range(k):
                z[bi, ti, i] = w_h @ torch.tanh(w_v @ features[bi, i] + b_v + g)
            z_s[bi, ti] = w_h @ torch.tanh(w_s @ sentinel[bi, ti] + b_s + g)
    return z, z_s


def _soft_attention(module, features, hidden, sentinel, padding=None):
    """Plain soft attention over the regions (section 2.1), the sentinel ignored."""
    z, _ = _scores(module, features, hidden, sentinel)
    if padding is not None:
        z = z.masked_fill(padding[:, None, :], float("-inf"))
    return torch.softmax(z, dim=-1) @ features  # (B, T, D)


SIZES = [
    # (B, k, T)
    (2, 49, 3),  # a 7 x 7 grid of regions, as in the paper, at three decoding steps
    (3, 5, 1),  # few regions, one step
    (1, 1, 4),  # one region: the attention over regions is trivially 1
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_matches_the_extended_softmax_written_out(seed, dtype, sizes):
    b, k, t = sizes
    module = _module(seed)
    features, hidden, sentinel = _inputs(seed, b, k, t)
    padding = torch.rand(b, k, generator=torch.Generator().manual_seed(seed)) < 0.3
    padding[:, 0] = False  # at least one real region per image
    z, z_s = _scores(module, features, hidden, sentinel)
    extended = torch.softmax(torch.cat([z.masked_fill(padding[:, None], float("-inf")), z_s[..., None]], -1), -1)
    beta = extended[..., -1:]
    expected = extended[..., :-1] @ features + beta * sentinel  # sum over k + 1 "regions", the sentinel last

    gold = module(features, hidden, sentinel, region_padding_mask=padding)
    baseline = module.to(dtype)(*(x.to(dtype) for x in (features, hidden, sentinel)), region_padding_mask=padding)
    assert_agrees(expected.to(dtype), gold.context, baseline.context, name="c_hat")
    assert_agrees(beta.to(dtype), gold.beta, baseline.beta, name="beta")
    assert torch.equal(gold.alpha[padding[:, None].expand_as(gold.alpha)], torch.zeros(int(padding.sum()) * t,
                                                                                        dtype=torch.float64))


def _force_sentinel_score(module, sign: float) -> None:
    """Saturate tanh in the sentinel's score at sign * sign(w_h), so zs = sign * |w_h|_1: the score's extreme.

    w_h is scaled so that |w_h|_1 is ~100 while the regions' scores stay within a few units (their tanh
    arguments are made small), which puts exp(-100) ~ 1e-44 between the two limits and plain floats.
    """
    with torch.no_grad():
        module.score.weight.mul_(200.0 / module.score.weight.abs().sum())
        module.region_proj.weight.mul_(0.02)
        module.hidden_proj.weight.mul_(0.02)
        module.region_proj.bias.mul_(0.02)
        module.sentinel_proj.bias.copy_(50.0 * sign * module.score.weight[0].sign())  # tanh(50 + O(1)) = 1.0


def test_gate_to_zero_gives_plain_soft_attention_over_the_regions(seed):
    module = _module(seed, attention_dim=64)
    _force_sentinel_score(module, -1.0)
    features, hidden, sentinel = _inputs(seed, 2, 9, 3)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, 6:] = True
    out = module(features, hidden, sentinel, region_padding_mask=padding)
    assert (out.beta < 1e-30).all(), out.beta.max()
    assert out.alpha.max() < 0.9  # still soft: the limit is compared with a real mixture, not one region
    assert_agrees(out.context, _soft_attention(module, features, hidden, sentinel, padding), name="c_hat at beta=0")


def test_gate_to_one_returns_the_sentinel(seed):
    module = _module(seed, attention_dim=64)
    _force_sentinel_score(module, +1.0)
    features, hidden, sentinel = _inputs(seed, 2, 9, 3)
    out = module(features, hidden, sentinel)
    assert (1 - out.beta < 1e-30).all(), (1 - out.beta).max()
    assert_agrees(out.context, sentinel, name="c_hat at beta=1")


def test_beta_stays_in_the_unit_interval_for_extreme_inputs(seed):
    module = _module(seed)
    features, hidden, sentinel = _inputs(seed, 3, 7, 5)
    for scale in (1.0, 1e3, 1e6):  # saturated tanh, huge scores: a softmax without max-subtraction overflows
        with torch.no_grad():
            module.score.weight.mul_(scale)
        out = module(features * scale, hidden * scale, sentinel)
        assert torch.isfinite(out.context).all() and torch.isfinite(out.beta).all()
        assert ((out.beta >= 0) & (out.beta <= 1)).all()
        assert_agrees(out.alpha.sum(-1), torch.ones(3, 5, dtype=torch.float64), name="sum of alpha")


def test_gradients_are_finite_and_match_finite_differences(seed):
    module = _module(seed, attention_dim=6)
    features, hidden, sentinel = (x.requires_grad_() for x in _inputs(seed, 2, 4, 2))
    padding = torch.tensor([[False, False, True, False], [False, False, False, False]])
    forward = lambda f, h, s: module(f, h, s, region_padding_mask=padding)  # noqa: E731
    # fast_mode: checks the Jacobian along random directions (one backward pass instead of one per input element)
    assert torch.autograd.gradcheck(lambda f, h, s: forward(f, h, s).context, (features, hidden, sentinel),
                                    fast_mode=True)
    weights = random_tensor((2, 2, D), seed=seed + 5, dtype=torch.float64)
    loss = (forward(features, hidden, sentinel).context * weights).sum()
    loss.backward()
    for name, grad in [("features", features.grad), ("hidden", hidden.grad), ("sentinel", sentinel.grad),
                       *((n, p.grad) for n, p in module.named_parameters())]:
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert torch.equal(features.grad[0, 2], torch.zeros(D, dtype=torch.float64))  # the padded region


def test_gradients_stay_finite_at_the_saturated_limits(seed):
    for sign in (-1.0, 1.0):
        module = _module(seed, attention_dim=64)
        _force_sentinel_score(module, sign)
        features, hidden, sentinel = (x.requires_grad_() for x in _inputs(seed, 2, 5, 2))
        module(features, hidden, sentinel).context.sum().backward()
        for grad in (features.grad, hidden.grad, sentinel.grad, *(p.grad for p in module.parameters())):
            assert torch.isfinite(grad).all()


def test_one_step_input_without_a_time_axis(seed):
    module = _module(seed)
    features, hidden, sentinel = _inputs(seed, 2, 6, 1)
    stepped = module(features, hidden[:, 0], sentinel[:, 0])
    full = module(features, hidden, sentinel)
    assert stepped.context.shape == (2, D) and stepped.alpha.shape == (2, 6) and stepped.beta.shape == (2, 1)
    assert_agrees(stepped.context, full.context[:, 0], name="one step")


def test_sentinel_is_the_lstm_hidden_state_under_the_output_gate_weights(seed):
    # LSTMCell: h_t = o_t * tanh(c_t), o_t = sigmoid(W_io x + b_io + W_ho h + b_ho), gate rows ordered i, f, g, o.
    torch.manual_seed(seed)
    lstm = torch.nn.LSTMCell(10, D).double()
    sentinel = VisualSentinel(10, D).double()
    with torch.no_grad():
        sentinel.input_gate.weight.copy_(lstm.weight_ih[3 * D:])
        sentinel.input_gate.bias.copy_(lstm.bias_ih[3 * D:] + lstm.bias_hh[3 * D:])
        sentinel.hidden_gate.weight.copy_(lstm.weight_hh[3 * D:])
    x = random_tensor((4, 10), seed=seed, dtype=torch.float64)
    h_prev, c_prev = random_tensor((4, D), seed=seed + 1, dtype=torch.float64), random_tensor(
        (4, D), seed=seed + 2, dtype=torch.float64)
    h, c = lstm(x, (h_prev, c_prev))
    assert_agrees(sentinel(x, h_prev, c), h, name="sentinel vs LSTMCell h_t")


def test_bad_inputs_are_rejected(seed):
    module = _module(seed)
    features, hidden, sentinel = _inputs(seed, 2, 5, 3)
    with pytest.raises(ValueError, match=r"features must have shape \(B, k, 16\)"):
        module(features[..., :-1], hidden, sentinel)
    with pytest.raises(ValueError, match=r"features must have shape"):
        module(features[0], hidden, sentinel)
    with pytest.raises(ValueError, match=r"hidden must have shape \(B, T, 16\) with B = 2"):
        module(features, hidden[:1], sentinel[:1])
    with pytest.raises(ValueError, match="sentinel must have the shape of hidden"):
        module(features, hidden, sentinel[:, :2])
    with pytest.raises(TypeError, match="features must be a floating-point tensor"):
        module(features.long(), hidden, sentinel)
    with pytest.raises(TypeError, match="region_padding_mask must be a bool tensor"):
        module(features, hidden, sentinel, region_padding_mask=torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"region_padding_mask must have shape \(B, k\) = \(2, 5\)"):
        module(features, hidden, sentinel, region_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="leaves an image with no region"):
        module(features, hidden, sentinel, region_padding_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="h_prev and memory must have one shape"):
        VisualSentinel(4, D)(random_tensor((2, 4), seed=seed), hidden[:, 0], hidden[:1, 0])
