"""reference/adaptive_attention.py: the adaptive attention step and Lu et al.'s caption decoder around it.

* No library implements it: a case worked out by hand (extended softmax over two regions and the sentinel),
  float32 against float64 gold on random inputs, and padded regions that change nothing.
* The limits, reached through the weights rather than by overriding the gate: a sentinel score far below
  every region's gives beta -> 0 and the plain soft-attention context sum_i alpha_i v_i; far above gives
  beta -> 1 and the sentinel itself.
* beta in [0, 1] even for huge inputs; gradients finite and correct (gradcheck); padding ignored.
* The sentinel equals torch.nn.LSTMCell's hidden state when it carries the LSTM's output-gate weights.
* The decoder: its LSTM cell against torch.nn.LSTMCell; the whole teacher-forced decoder against itself with the
  recurrence swapped for torch.nn.LSTMCell and the loss from torch's cross-entropy (logits, gates, loss,
  gradients); the gate's limits in closed form; two steps worked out by hand; greedy decoding.
"""

import copy
import math

import pytest
import torch

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.adaptive_attention import (
    AdaptiveAttention,
    AdaptiveCaptionDecoder,
    AdaptiveCaptionDecoderConfig,
    LSTMCell,
    VisualSentinel,
)

D, A = 16, 24  # feature and attention widths


def _module(seed, attention_dim=A):
    torch.manual_seed(seed)
    return AdaptiveAttention(D, attention_dim).double()


def _inputs(seed, b, k, t, dtype=torch.float64):
    return (random_tensor((b, k, D), seed=seed, dtype=dtype), random_tensor((b, t, D), seed=seed + 1, dtype=dtype),
            random_tensor((b, t, D), seed=seed + 2, dtype=dtype))


SIZES = [
    # (B, k, T)
    (2, 49, 3),  # a 7 x 7 grid of regions, as in the paper, at three decoding steps
    (3, 5, 1),  # few regions, one step
    (1, 1, 4),  # one region: the attention over regions is trivially 1
]


def test_extended_softmax_worked_out_by_hand():
    # D = 2, A = 1. W_v = (1, 0), W_s = (0, 1), W_g = 0, biases 0, w_h = 1, so a score is tanh of one coordinate:
    # regions v1 = (atanh 0.5, 1), v2 = (0, -1) and sentinel s = (2, atanh 0.5) give z = (0.5, 0), zs = 0.5.
    # Extended softmax over [0.5, 0, 0.5]: e^0.5 = 1.64872, denominator 2 e^0.5 + 1 = 4.29744, weights
    # (0.38365, 0.23270, 0.38365), so beta = 0.38365;
    # alpha over the regions alone = softmax(0.5, 0) = (0.62246, 0.37754).
    # c_hat = 0.38365 v1 + 0.23270 v2 + 0.38365 s
    #       = (0.38365 * 0.54931 + 0 + 0.76730, 0.38365 - 0.23270 + 0.38365 * 0.54931) = (0.97805, 0.36170).
    e = math.exp(0.5)
    a1, a2 = e / (2 * e + 1), 1 / (2 * e + 1)
    t = math.atanh(0.5)
    expected_context = torch.tensor([[a1 * t + 2 * a1, a1 - a2 + a1 * t]], dtype=torch.float64)
    assert torch.allclose(expected_context, torch.tensor([[0.97805, 0.36170]], dtype=torch.float64), atol=1e-5)

    module = AdaptiveAttention(2, 1).double()
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        module.region_proj.weight.copy_(torch.tensor([[1.0, 0.0]]))
        module.sentinel_proj.weight.copy_(torch.tensor([[0.0, 1.0]]))
        module.score.weight.fill_(1.0)
    features = torch.tensor([[[t, 1.0], [0.0, -1.0]]], dtype=torch.float64)
    sentinel = torch.tensor([[2.0, t]], dtype=torch.float64)
    hidden = torch.tensor([[0.3, -0.7]], dtype=torch.float64)  # W_g = 0: any hidden state gives the same
    out = module(features, hidden, sentinel)
    assert_agrees(out.context, expected_context, name="hand case c_hat")
    assert_agrees(out.beta, torch.tensor([[a1]], dtype=torch.float64), name="hand case beta")
    assert_agrees(out.alpha, torch.tensor([[e / (e + 1), 1 / (e + 1)]], dtype=torch.float64), name="hand case alpha")


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_float32_agrees_with_float64_and_padding_gets_no_weight(seed, sizes):
    b, k, t = sizes
    module = _module(seed)
    features, hidden, sentinel = _inputs(seed, b, k, t)
    padding = torch.rand(b, k, generator=torch.Generator().manual_seed(seed)) < 0.3
    padding[:, 0] = False  # at least one real region per image
    gold = module(features, hidden, sentinel, region_padding_mask=padding)
    low = module.float()(*(x.float() for x in (features, hidden, sentinel)), region_padding_mask=padding)
    assert_agrees(low.context, gold.context, name="c_hat in float32")  # element-wise rule, no baseline
    assert_agrees(low.beta, gold.beta, name="beta in float32")
    assert torch.equal(gold.alpha[padding[:, None].expand_as(gold.alpha)], torch.zeros(int(padding.sum()) * t,
                                                                                        dtype=torch.float64))
    kept = ~padding  # the padded regions contribute nothing: dropping them changes no output
    for row in range(b):
        alone = module.double()(features[row : row + 1, kept[row]], hidden[row : row + 1], sentinel[row : row + 1])
        assert_agrees(alone.context[0], gold.context[row], name="padding dropped")


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
    # The limit in closed form: c_hat = sum_i alpha_i v_i, the plain soft-attention context.
    assert_agrees(out.context, out.alpha @ features, name="c_hat at beta=0")


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


# --------------------------------------------------------------------------------------------------
# The caption decoder (section 2.4): LSTM + visual sentinel + adaptive attention, teacher-forced
# --------------------------------------------------------------------------------------------------

VOCAB, FEATURE, HIDDEN, EMBED = 23, 12, 16, 10


def _decoder(seed):
    torch.manual_seed(seed)
    config = AdaptiveCaptionDecoderConfig(vocab_size=VOCAB, feature_dim=FEATURE, hidden_size=HIDDEN,
                                          embedding_dim=EMBED, attention_dim=20)
    return AdaptiveCaptionDecoder(config).double()


def _regions_and_captions(seed, b=3, k=7, length=6):
    regions = random_tensor((b, k, FEATURE), seed=seed, dtype=torch.float64)
    captions = torch.randint(1, VOCAB, (b, length), generator=torch.Generator().manual_seed(seed))
    captions[:, 0] = 0  # the start token
    return regions, captions


def _with_torch_lstm(decoder):
    """The decoder with its recurrence replaced by torch.nn.LSTMCell, the weights copied (same names)."""
    theirs = torch.nn.LSTMCell(decoder.lstm.input_size, decoder.lstm.hidden_size).to(decoder.lstm.weight_ih.dtype)
    theirs.load_state_dict(decoder.lstm.state_dict())
    decoder.lstm = theirs
    return decoder


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lstm_cell_matches_torch_lstmcell(seed, dtype):
    torch.manual_seed(seed)
    ours = LSTMCell(9, HIDDEN).double()
    x, h, m = (random_tensor((4, n), seed=seed + i, dtype=torch.float64) for i, n in enumerate((9, HIDDEN, HIDDEN)))

    def run(cell, dt):
        inputs = [t.to(dt).requires_grad_() for t in (x, h, m)]
        h_t, m_t = cell(inputs[0], (inputs[1], inputs[2]))
        loss = (h_t * torch.arange(HIDDEN, dtype=dt)).sum() + m_t.square().sum()
        return h_t.detach(), m_t.detach(), torch.autograd.grad(loss, [*inputs, cell.weight_hh])

    gold = run(ours, torch.float64)
    baseline = run(copy.deepcopy(ours).to(dtype), dtype)
    theirs = torch.nn.LSTMCell(9, HIDDEN).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    candidate = run(theirs, dtype)
    assert_agrees(candidate[0], gold[0], baseline[0], name="torch LSTMCell h_t")
    assert_agrees(candidate[1], gold[1], baseline[1], name="torch LSTMCell m_t")
    for name, c, g, b in zip(("x", "h", "m", "weight_hh"), candidate[2], gold[2], baseline[2], strict=True):
        assert_agrees(c, g, b, gradient=True, name=f"LSTMCell d/d {name}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_teacher_forced_decoder_matches_it_on_torch_lstmcell(seed, dtype):
    decoder = _decoder(seed)
    regions, captions = _regions_and_captions(seed)
    mask = (torch.arange(6)[None, :] < torch.tensor([[6], [3], [5]])).long()  # right padding

    def run(model, dt, independent_loss=False):
        r = regions.to(dt).requires_grad_()
        logits, beta = model(r, captions)
        if independent_loss:  # the candidate scores words 1..L-1 with torch's cross-entropy, padding ignored
            labels = captions[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
        else:
            loss = model.loss(r, captions, mask)
        wrt = [r, model.embedding.weight, model.lstm.weight_hh, model.sentinel.input_gate.weight]
        return logits.detach(), beta.detach(), loss.detach(), torch.autograd.grad(loss, wrt)

    gold = run(decoder, torch.float64)
    baseline = run(copy.deepcopy(decoder).to(dtype), dtype)
    candidate = run(_with_torch_lstm(copy.deepcopy(decoder).to(dtype)), dtype, independent_loss=True)
    assert_agrees(candidate[0], gold[0], baseline[0], name="decoder on torch LSTMCell: logits")
    assert_agrees(candidate[1], gold[1], baseline[1], name="decoder on torch LSTMCell: beta")
    assert_agrees(candidate[2], gold[2], baseline[2], name="decoder on torch LSTMCell: loss")
    for name, c, g, b in zip(("regions", "embedding", "lstm weight_hh", "sentinel W_x"), candidate[3], gold[3],
                             baseline[3], strict=True):
        assert_agrees(c, g, b, gradient=True, name=f"decoder d loss / d {name}")


def test_decoder_gate_limits(seed):
    """beta -> 1: the image reaches the words only through the global feature v_g (the mean region), so a
    zero-mean change of the regions changes nothing; beta -> 0: the sentinel is ignored, so its gate's weights
    change nothing. Away from the limits both changes show: the properties are the limits', not the model's."""
    regions, captions = _regions_and_captions(seed)
    shift = random_tensor(regions.shape, seed=seed + 9, dtype=torch.float64)
    shift = shift - shift.mean(dim=1, keepdim=True)  # the mean region, hence v_g, is unchanged
    for sign, change in ((1.0, "regions"), (-1.0, "sentinel")):
        decoder = _decoder(seed)
        free = decoder(regions, captions)[0]
        _force_sentinel_score(decoder.attention, sign)
        logits, beta = decoder(regions, captions)
        if change == "regions":
            assert (1 - beta < 1e-30).all()
            changed, changed_free = decoder(regions + shift, captions)[0], _decoder(seed)(regions + shift, captions)[0]
        else:
            assert (beta < 1e-30).all()
            other = _decoder(seed + 1).sentinel.state_dict()
            free_decoder = _decoder(seed)
            free_decoder.sentinel.load_state_dict(other)
            changed_free = free_decoder(regions, captions)[0]
            decoder.sentinel.load_state_dict(other)
            changed = decoder(regions, captions)[0]
        assert_agrees(changed, logits, name=f"beta at its limit: {change} changed")
        assert (changed_free - free).abs().max() > 1e-3, f"changing the {change} must matter away from the limit"


def test_two_steps_worked_out_by_hand():
    # One region a = 1, V = 2 words, every width 1. Weights: W_a = W_b = 1 (v_1 = v_g = ReLU(1) = 1);
    # embeddings w(0) = 0.5, w(1) = -0.5; LSTM: only the cell candidate reads the word, u = tanh(w), every other
    # weight and bias 0, so i = f = o = sigmoid(0) = 1/2; sentinel gate g = sigmoid(log 3 + h_prev) (W_x = 0,
    # W_h = 1) and s = g tanh(m); attention: W_v = 1, W_g = W_s = 0, biases 0, w_h = 1, so z_1 = tanh(1),
    # z_s = tanh(0) = 0, beta = sigmoid(0 - tanh 1) = 0.31830 at every step and c = v_1 = 1; output W_p = (1, -1),
    # so logits = (y, -y) with y = c_hat + h = beta s + (1 - beta) + h.
    # Caption [0, 1, 0]. Step 1 reads word 0:  m1 = tanh(0.5)/2 = 0.23106, h1 = tanh(m1)/2 = 0.11352,
    #   g1 = sigmoid(log 3) = 3/4, s1 = 0.17027, y1 = 0.05420 + 0.68170 + 0.11352 = 0.84941;
    #   target 1: CE = log(1 + e^(2 y1)) = 1.86680.
    # Step 2 reads word 1:  m2 = m1/2 + tanh(-0.5)/2 = -0.11553, h2 = tanh(m2)/2 = -0.05751,
    #   g2 = sigmoid(log 3 + h1) = 0.77068, s2 = g2 tanh(m2) = -0.08864, y2 = -0.02821 + 0.68170 - 0.05751 = 0.59598;
    #   target 0: CE = log(1 + e^(-2 y2)) = 0.26515.
    # Loss = (1.86680 + 0.26515) / 2 = 1.06597. Greedy: y > 0 at both steps, so the words are 0, 0.
    beta = 1 / (1 + math.exp(math.tanh(1)))
    m1 = math.tanh(0.5) / 2
    h1, s1 = math.tanh(m1) / 2, 0.75 * math.tanh(m1)
    y1 = beta * s1 + (1 - beta) + h1
    m2 = m1 / 2 + math.tanh(-0.5) / 2
    h2, s2 = math.tanh(m2) / 2, math.tanh(m2) / (1 + math.exp(-math.log(3) - h1))
    y2 = beta * s2 + (1 - beta) + h2
    loss = (math.log1p(math.exp(2 * y1)) + math.log1p(math.exp(-2 * y2))) / 2
    assert abs(loss - 1.06597) < 1e-5  # the working above, to its printed digits

    config = AdaptiveCaptionDecoderConfig(vocab_size=2, feature_dim=1, hidden_size=1, embedding_dim=1, attention_dim=1)
    decoder = AdaptiveCaptionDecoder(config).double()
    with torch.no_grad():
        for p in decoder.parameters():
            p.zero_()
        decoder.region_proj.weight.fill_(1.0)
        decoder.global_proj.weight.fill_(1.0)
        decoder.embedding.weight.copy_(torch.tensor([[0.5], [-0.5]]))
        decoder.lstm.weight_ih[2, 0] = 1.0  # rows i, f, u, o; columns [word; v_g]
        decoder.sentinel.input_gate.bias.fill_(math.log(3))
        decoder.sentinel.hidden_gate.weight.fill_(1.0)
        decoder.attention.region_proj.weight.fill_(1.0)
        decoder.attention.score.weight.fill_(1.0)
        decoder.output.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    regions = torch.ones(1, 1, 1, dtype=torch.float64)
    captions = torch.tensor([[0, 1, 0]])
    logits, betas = decoder(regions, captions)
    expected = torch.tensor([[[y1, -y1], [y2, -y2]]], dtype=torch.float64)
    assert_agrees(logits.detach(), expected, name="hand case logits")
    assert_agrees(betas.detach(), torch.full((1, 2, 1), beta, dtype=torch.float64), name="hand case beta")
    assert_agrees(decoder.loss(regions, captions).detach(), torch.tensor(loss, dtype=torch.float64),
                  name="hand case loss")
    assert torch.equal(decoder.caption(regions, 2), torch.tensor([[0, 0]]))


def test_greedy_caption_takes_the_argmax_of_teacher_forcing_on_its_own_words(seed):
    decoder = _decoder(seed)
    with torch.no_grad():  # sharpen the untrained model so the argmax is far from ties
        decoder.output.weight.mul_(20)
    regions, _ = _regions_and_captions(seed)
    words = decoder.caption(regions, 5)
    assert words.shape == (3, 5)
    start = torch.zeros(3, 1, dtype=torch.long)
    logits, _ = decoder(regions, torch.cat([start, words], dim=1))
    assert torch.equal(logits.argmax(-1), words)
    for row in range(3):  # each image decodes the same alone as in the batch
        assert torch.equal(decoder.caption(regions[row : row + 1], 5)[0], words[row])


def test_decoder_bad_inputs_raise_naming_the_argument(seed):
    decoder = _decoder(seed)
    regions, captions = _regions_and_captions(seed)
    cases = [
        (lambda: decoder(regions[..., :-1], captions), ValueError, r"regions must have shape \(B, k, feature_dim\)"),
        (lambda: decoder(regions.long(), captions), TypeError, "regions must be a floating-point"),
        (lambda: decoder(regions, captions.float()), TypeError, "captions must be an int32 or int64"),
        (lambda: decoder(regions, captions[:, :1]), ValueError, "L >= 2"),
        (lambda: decoder(regions[:2], captions), ValueError, "batch size of regions"),
        (lambda: decoder(regions, captions + VOCAB), ValueError, r"token ids in \[0, 23\)"),
        (lambda: decoder.loss(regions, captions, torch.ones(3, 2)), ValueError, "caption_mask must have the shape"),
        (lambda: decoder.loss(regions, captions, torch.zeros_like(captions)), ValueError, "at least one word"),
        (lambda: decoder.caption(regions, 0), ValueError, "max_length must be a positive integer"),
        (lambda: AdaptiveCaptionDecoderConfig(vocab_size=5, feature_dim=3, start_token=5), ValueError,
         "start_token must be"),
        (lambda: AdaptiveCaptionDecoderConfig(vocab_size=0, feature_dim=3), ValueError, "vocab_size must be"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
