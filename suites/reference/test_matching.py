"""reference/matching.py: ITM head and ALBEF-style hard-negative mining.

* the positive (the diagonal) is never drawn, even when it holds nearly all of the softmax mass;
* draws follow softmax over the negatives: a controlled 3:1 case and a random matrix, each with a
  5-sigma binomial bound on the empirical frequencies (false-alarm rate below 1e-6 per element);
* the head's logits and loss on a hand-computed case, and against F.linear + F.cross_entropy;
* the fusion encoder model (ViT + text encoder cross-attending to the patches + ITM head) against
  transformers.BlipForImageTextRetrieval (tiny config, every weight redrawn at random and copied): the ITM logits
  (use_itm_head=True), the contrastive cosines (use_itm_head=False), and the ITM loss on hard negatives mined
  from those cosines, forward and gradients. gold = ours in float64, candidate = BLIP in the dtype under test,
  baseline = ours in that dtype.
"""

import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor, randomize_parameters
from reference.matching import (
    FusionTextConfig,
    ImageTextMatchingConfig,
    ImageTextMatchingHead,
    ImageTextMatchingModel,
    build_itm_pairs,
    hard_negative_probabilities,
    sample_hard_negatives,
)
from reference.vit import ViTConfig

DRAWS = 20000


def _frequencies(similarity, seed):
    generator = torch.Generator().manual_seed(seed)
    draws = sample_hard_negatives(similarity, num_samples=DRAWS, generator=generator)  # (B, DRAWS)
    b = similarity.shape[0]
    counts = torch.stack([torch.bincount(row, minlength=b) for row in draws]).to(torch.float64)
    return counts / DRAWS


def _assert_within_five_sigma(frequencies, probabilities):
    sigma = (probabilities * (1 - probabilities) / DRAWS).sqrt()
    bound = 5 * sigma + 1e-12  # exact zeros (the diagonal) must stay exactly zero
    worst = float(((frequencies - probabilities).abs() - bound).max())
    assert worst <= 0, f"frequencies off by more than 5 sigma: {frequencies} vs {probabilities}"


def test_positive_is_never_drawn_even_when_it_dominates(seed):
    similarity = random_tensor((6, 6), seed=seed, dtype=torch.float64) + 200 * torch.eye(6, dtype=torch.float64)
    # exp(200) swamps the row: ALBEF's softmax-then-zero would leave ~1e-87 elsewhere; masking first does not.
    frequencies = _frequencies(similarity, seed)
    assert torch.equal(frequencies.diagonal(), torch.zeros(6, dtype=torch.float64))
    assert_agrees(frequencies.sum(-1), torch.ones(6, dtype=torch.float64), name="one draw per row")
    single = sample_hard_negatives(similarity, generator=torch.Generator().manual_seed(seed))  # ALBEF's one draw
    assert single.shape == (6,) and (single != torch.arange(6)).all()


def test_hard_negatives_are_drawn_three_times_as_often_as_easy_ones(seed):
    # Row 0: the positive 10, text 1 at log 3 and text 2 at 0, so P(1) = 3 / (3 + 1) = 0.75, P(2) = 0.25.
    similarity = torch.tensor([[10.0, math.log(3.0), 0.0], [0.5, 2.0, -1.0], [0.3, 0.1, 4.0]], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.75, 0.25], dtype=torch.float64)
    assert_agrees(hard_negative_probabilities(similarity)[0], expected, name="row 0 probabilities")
    frequencies = _frequencies(similarity, seed)
    assert frequencies[0, 1] > frequencies[0, 2]
    _assert_within_five_sigma(frequencies[0], expected)


def test_draws_follow_softmax_over_the_negatives(seed):
    similarity = random_tensor((5, 5), seed=seed, dtype=torch.float64, scale=1.5)
    masked = similarity.clone()
    masked.fill_diagonal_(-math.inf)
    probabilities = masked.exp() / masked.exp().sum(-1, keepdim=True)  # written out: exp / sum over j != i
    assert_agrees(hard_negative_probabilities(similarity), probabilities, name="probabilities")
    _assert_within_five_sigma(_frequencies(similarity, seed), probabilities)


@pytest.mark.parametrize("batch", [2, 7])  # two: the only negative is forced
def test_itm_pairs_hold_b_positives_and_2b_negatives(seed, batch):
    similarity = random_tensor((batch, batch), seed=seed, dtype=torch.float64).requires_grad_()
    image_index, text_index, labels = build_itm_pairs(similarity, generator=torch.Generator().manual_seed(seed))
    assert image_index.shape == text_index.shape == labels.shape == (3 * batch,)
    assert labels.tolist() == [1] * batch + [0] * (2 * batch)
    assert torch.equal(image_index[:batch], torch.arange(batch)) and torch.equal(text_index[:batch],
                                                                                  torch.arange(batch))
    assert (image_index[batch:] != text_index[batch:]).all()  # no negative is a matched pair
    assert torch.equal(image_index[batch : 2 * batch], torch.arange(batch))  # each image gets one negative text
    assert torch.equal(text_index[2 * batch :], torch.arange(batch))  # each text gets one negative image
    if batch == 2:
        assert text_index[2:4].tolist() == [1, 0] and image_index[4:].tolist() == [1, 0]


def test_negative_images_come_from_the_columns(seed):
    # Column 0 strongly prefers image 2 (sim[2, 0] = 30), row 0 strongly prefers text 1 (sim[0, 1] = 30):
    # the text-side negative of text 0 must be image 2, the image-side negative of image 0 text 1.
    similarity = random_tensor((4, 4), seed=seed, dtype=torch.float64, scale=0.1)
    similarity[2, 0] = 30.0
    similarity[0, 1] = 30.0
    image_index, text_index, _ = build_itm_pairs(similarity, generator=torch.Generator().manual_seed(seed))
    assert int(text_index[4]) == 1  # image 0's negative text (probability 1 - ~1e-13)
    assert int(image_index[8]) == 2  # text 0's negative image


def test_head_hand_computed_logits_and_loss():
    # W = [[1, -1], [0.5, 2]], b = [0.1, -0.2].
    # h = (2, 1):  logits (2 - 1 + 0.1, 1 + 2 - 0.2)  = (1.1, 2.8),  label 1: log(1 + e^(1.1 - 2.8)) = log(1 + e^-1.7)
    # h = (-1, 3): logits (-1 - 3 + 0.1, -0.5 + 6 - 0.2) = (-3.9, 5.3), label 0: log(1 + e^(5.3 + 3.9)) = log(1 + e^9.2)
    head = ImageTextMatchingHead(2).double()
    with torch.no_grad():
        head.classifier.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        head.classifier.bias.copy_(torch.tensor([0.1, -0.2]))
    fused = torch.tensor([[2.0, 1.0], [-1.0, 3.0]], dtype=torch.float64)
    expected_logits = torch.tensor([[1.1, 2.8], [-3.9, 5.3]], dtype=torch.float64)
    assert_agrees(head(fused), expected_logits, name="logits")
    expected_loss = (math.log1p(math.exp(-1.7)) + math.log1p(math.exp(9.2))) / 2
    assert_agrees(head.loss(fused, torch.tensor([1, 0])), torch.tensor(expected_loss, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_head_loss_and_gradient_match_torch(seed, dtype):
    torch.manual_seed(seed)
    head = ImageTextMatchingHead(24).double()
    fused = random_tensor((3 * 5, 24), seed=seed, dtype=torch.float64).requires_grad_()
    labels = torch.tensor([1] * 5 + [0] * 10)
    gold = head.loss(fused, labels)
    grad_gold, = torch.autograd.grad(gold, fused)
    low_head = ImageTextMatchingHead(24).to(dtype)
    low_head.load_state_dict(head.state_dict())
    low = fused.detach().to(dtype).requires_grad_()
    baseline = low_head.loss(low, labels)
    grad_baseline, = torch.autograd.grad(baseline, low)
    cand_in = fused.detach().to(dtype).requires_grad_()
    candidate = F.cross_entropy(F.linear(cand_in, low_head.classifier.weight, low_head.classifier.bias), labels)
    grad_candidate, = torch.autograd.grad(candidate, cand_in)
    assert_agrees(candidate, gold, baseline, name="ITM loss")
    assert_agrees(grad_candidate, grad_gold, grad_baseline, gradient=True, name="d loss / d fused")


def test_bad_inputs_raise_naming_the_argument():
    head = ImageTextMatchingHead(8)
    cases = [
        (lambda: sample_hard_negatives(torch.randn(3, 4)), ValueError, "similarity must be a square"),
        (lambda: sample_hard_negatives(torch.randn(1, 1)), ValueError, "at least 2"),
        (lambda: sample_hard_negatives(torch.ones(3, 3, dtype=torch.long)), TypeError, "floating-point"),
        (lambda: sample_hard_negatives(torch.full((3, 3), math.nan)), ValueError, "similarity must be finite"),
        (lambda: build_itm_pairs(torch.randn(2, 3)), ValueError, "similarity must be a square"),
        (lambda: sample_hard_negatives(torch.randn(3, 3), num_samples=0), ValueError, "num_samples must be"),
        (lambda: ImageTextMatchingHead(0), ValueError, "hidden_size must be"),
        (lambda: head(torch.randn(4, 7)), ValueError, "fused must have shape \\(P, hidden_size=8\\)"),
        (lambda: head.loss(torch.randn(4, 8), torch.tensor([1, 0, 1])), ValueError, "labels must be an integer"),
        (lambda: head.loss(torch.randn(2, 8), torch.tensor([1, 2])), ValueError, "0 \\(unmatched\\) or 1"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()



# ---- the fusion encoder model against transformers.BlipForImageTextRetrieval --------------------------------

VOCAB = 53


def _blip_models(seed: int):
    """(ours, theirs) in float64 with the same random weights: ViT 12x12 images in 4x4 patches (9 + [CLS]), text
    width 16 (head dim 4), image width 24 (head dim 6), two layers each."""
    text = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=28,
                max_position_embeddings=20, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, bos_token_id=1,
                sep_token_id=2)
    vision = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=36, image_size=12,
                  patch_size=4, attention_dropout=0.0)
    config = transformers.BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=12,
                                     attn_implementation="eager")
    theirs = randomize_parameters(transformers.BlipForImageTextRetrieval(config).double().eval(), seed,
                                  unit_scale=("embedding",))
    ours = ImageTextMatchingModel(ImageTextMatchingConfig(
        FusionTextConfig(**{k: v for k, v in text.items() if "dropout" not in k and "token" not in k}),
        ViTConfig(image_size=12, patch_size=4, hidden_size=24, num_layers=2, num_heads=4, intermediate_size=36,
                  layer_norm_eps=config.vision_config.layer_norm_eps),
        embed_dim=12)).double()
    return ours.copy_from_transformers(theirs), theirs


def _blip_inputs(seed: int, batch: int, length: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length  # one row without padding
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, N), 1 = real
    ids[mask == 0] = 0  # [PAD]
    return ids, random_tensor((batch, 3, 12, 12), seed=seed + 1, dtype=torch.float64), mask


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch, length", [(2, 5), (5, 11)])
def test_itm_model_matches_blip(seed, dtype, batch, length):
    ours, theirs = _blip_models(seed)
    ids, pixels, mask = _blip_inputs(seed, batch, length)
    gold = ours.itm_logits(pixels, ids, mask), ours.contrastive_similarity(pixels, ids, mask)
    ours = ours.to(dtype)
    baseline = ours.itm_logits(pixels.to(dtype), ids, mask), ours.contrastive_similarity(pixels.to(dtype), ids, mask)
    with torch.no_grad():
        theirs = theirs.to(dtype)
        candidate = [theirs(input_ids=ids, pixel_values=pixels.to(dtype), attention_mask=mask,
                            use_itm_head=use_itm_head).itm_score for use_itm_head in (True, False)]
    for name, c, g, b in zip(("ITM logits", "contrastive cosines"), candidate, gold, baseline, strict=True):
        assert_agrees(c, g.detach(), b.detach(), name=f"BlipForImageTextRetrieval {name}")


def test_itm_loss_on_mined_hard_negatives_matches_blip(seed):
    """Pairs mined from BLIP's own cosines (same generator state) are the pairs ours mines; the loss over them and
    its gradients (pixels, a cross-attention weight) agree. Temperature 0.5 keeps every negative drawable."""
    ours, theirs = _blip_models(seed)
    ids, pixels, mask = _blip_inputs(seed, 4, 7)
    with torch.no_grad():
        ours.temperature.fill_(0.5)
    p_ours = pixels.clone().requires_grad_()
    loss, (image_index, text_index, labels) = ours.itm_loss(p_ours, ids, mask,
                                                            generator=torch.Generator().manual_seed(seed))
    p_theirs = pixels.clone().requires_grad_()
    with torch.no_grad():
        similarity = theirs(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=False).itm_score
    their_pairs = build_itm_pairs(similarity / 0.5, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(their_pairs[0], image_index) and torch.equal(their_pairs[1], text_index)
    assert int(labels.sum()) == 4 and labels.shape == (12,)
    with torch.no_grad():  # more draws at a sharp temperature: the pairs follow BLIP's cosines / tau each time
        ours.temperature.fill_(0.01)  # the cosines of random weights differ by hundredths: spread them
        for draw in range(1, 6):
            mined = ours.itm_loss(pixels, ids, mask, generator=torch.Generator().manual_seed(seed + draw))[1]
            expected = build_itm_pairs(similarity / 0.01, generator=torch.Generator().manual_seed(seed + draw))
            assert all(torch.equal(a, b) for a, b in zip(mined, expected, strict=True))
    logits = theirs(input_ids=ids[text_index], pixel_values=p_theirs[image_index], attention_mask=mask[text_index],
                    use_itm_head=True).itm_score
    their_loss = F.cross_entropy(logits, labels)
    assert_agrees(their_loss.detach(), loss.detach(), name="ITM loss on mined hard negatives")
    grads = [torch.autograd.grad(l, (p, w)) for l, p, w in (
        (loss, p_ours, ours.text_encoder.layers[1].cross_attn.k_proj.weight),
        (their_loss, p_theirs, theirs.text_encoder.encoder.layer[1].crossattention.self.key.weight))]
    for name, candidate, gold in zip(("pixel_values", "cross-attention key weight"), grads[1], grads[0], strict=True):
        assert_agrees(candidate, gold, gradient=True, name=f"ITM loss d / d {name}")


def test_text_reads_the_image_only_through_cross_attention(seed):
    """The unimodal text encoder ignores the image; the fused one depends on it; padding never reaches real tokens."""
    ours, _ = _blip_models(seed)
    ids, pixels, mask = _blip_inputs(seed, 3, 6)
    other = random_tensor(pixels.shape, seed=seed + 9, dtype=torch.float64)
    similarity, similarity_other = (ours.contrastive_similarity(p, ids, mask) for p in (pixels, other))
    texts = ours.text_encoder(ids, mask)
    assert not torch.allclose(similarity, similarity_other)  # the image side moved
    fused = ours.text_encoder(ids, mask, ours.encode_image(pixels))
    fused_other = ours.text_encoder(ids, mask, ours.encode_image(other))
    assert (fused - fused_other).abs().max() > 1e-6
    changed = ids.clone()
    changed[mask == 0] = 7
    real = mask.bool()
    assert_agrees(ours.text_encoder(changed, mask)[real], texts[real], name="real tokens after changing padding")


def test_itm_model_backend_reaches_every_attention_layer():
    config = ImageTextMatchingConfig(FusionTextConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2,
                                                      num_attention_heads=4, intermediate_size=28),
                                     ViTConfig(image_size=8, patch_size=4, hidden_size=24, num_layers=1, num_heads=4,
                                               intermediate_size=36), embed_dim=12, backend="sdpa")
    model = ImageTextMatchingModel(config)
    assert [m.backend for m in model.modules() if hasattr(m, "backend")] == ["sdpa"] * 5  # 1 ViT + 2 x (self, cross)


def test_itm_model_rejects_bad_inputs(seed):
    ours, _ = _blip_models(seed)
    ids, pixels, mask = _blip_inputs(seed, 2, 5)
    with pytest.raises(ValueError, match="one image per text"):
        ours.itm_logits(pixels[:1], ids, mask)
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        ours.itm_logits(pixels, ids, mask[:, :-1])
    with pytest.raises(ValueError, match="at least one real token"):
        ours.itm_logits(pixels, ids, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="input_ids must lie in"):
        ours.itm_logits(pixels, ids + VOCAB, mask)
