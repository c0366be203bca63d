"""reference/contrastive.py against independent oracles.

* clip_loss: the loss transformers' CLIPModel returns with return_loss=True. A tiny CLIPModel (built
  from a config, no hub) produces its own projected embeddings; the same embeddings go into
  clip_loss, and the loss, d loss / d logit_scale and d loss / d embeddings must agree.
* nt_xent_loss: pytorch-metric-learning's NTXentLoss (forward and gradients), a hand-computed 2-example case,
  and properties.
Every comparison goes through the agreement policy: gold = the reference in float64, candidate = the
oracle in the dtype under test, baseline = the reference in that dtype.
"""

import math

import pytest
import torch
import transformers
from pytorch_metric_learning.losses import NTXentLoss

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.contrastive import ClipLoss, clip_logits, clip_loss, nt_xent_loss

DTYPES = [torch.float64, torch.float32]


def _tiny_clip(seed: int) -> transformers.CLIPModel:
    torch.manual_seed(seed)
    text = dict(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=12, bos_token_id=1, eos_token_id=3, pad_token_id=0)  # eos 2 is a legacy path
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=8,
                  patch_size=4)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)
    return transformers.CLIPModel(config).eval()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [2, 7])  # the smallest batch, and an odd one
def test_clip_loss_matches_transformers_clip_model(seed, dtype, batch):
    model = _tiny_clip(seed).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a random scale below the clamp (transformers' CLIPModel does not clamp)
        model.logit_scale.fill_(float(torch.rand((), generator=generator, dtype=torch.float64)) * math.log(100))
    input_ids = torch.randint(4, 40, (batch, 9), generator=generator)
    input_ids[:, -1] = 3  # end every caption with the eos token, where CLIP pools the text
    pixels = random_tensor((batch, 3, 8, 8), seed=seed, dtype=dtype)
    out = model(input_ids=input_ids, pixel_values=pixels, return_loss=True)
    image = out.vision_model_output.pooler_output  # (B, 12): CLIP's projected, unnormalised embeddings
    text = out.text_model_output.pooler_output
    image.retain_grad()
    text.retain_grad()
    out.loss.backward()

    # The same embeddings, upcast: the float64 gold; and as they are: the baseline.
    image64, text64 = (e.detach().double().requires_grad_() for e in (image, text))
    scale64 = model.logit_scale.detach().double().requires_grad_()
    gold = clip_loss(image64, text64, scale64)
    gold.backward()
    image_b, text_b = (e.detach().requires_grad_() for e in (image, text))
    scale_b = model.logit_scale.detach().clone().requires_grad_()
    baseline = clip_loss(image_b, text_b, scale_b)
    baseline.backward()

    assert_agrees(out.loss.detach(), gold.detach(), baseline.detach(), name="CLIPModel loss")
    assert_agrees(model.logit_scale.grad, scale64.grad, scale_b.grad, gradient=True, name="d/d logit_scale")
    assert_agrees(image.grad, image64.grad, image_b.grad, gradient=True, name="d/d image_embeds")
    assert_agrees(text.grad, text64.grad, text_b.grad, gradient=True, name="d/d text_embeds")


def test_clip_logits_are_scaled_cosines(seed):
    image = random_tensor((5, 8), seed=seed, dtype=torch.float64)
    text = random_tensor((5, 8), seed=seed + 1, dtype=torch.float64)
    cosines = torch.nn.functional.cosine_similarity(image[:, None, :], text[None, :, :], dim=-1)
    assert_agrees(clip_logits(image, text, 1.5), math.exp(1.5) * cosines, name="logits")


@pytest.mark.parametrize("batch", [2, 5, 64])
def test_equal_logits_give_log_batch(seed, batch):
    # Every image is the same vector and so is every text: every logit in a row is equal, so each
    # cross-entropy is -log(1 / B) = log(B), whatever the scale.
    image = random_tensor((1, 16), seed=seed, dtype=torch.float64).expand(batch, 16)
    text = random_tensor((1, 16), seed=seed + 1, dtype=torch.float64).expand(batch, 16)
    for log_scale in (0.0, 2.7, math.log(100)):
        loss = clip_loss(image, text, log_scale)
        assert_agrees(loss, torch.tensor(math.log(batch), dtype=torch.float64), name=f"log B at t={log_scale}")


def test_perfectly_aligned_orthogonal_pairs_hand_computed():
    # B = 3 orthonormal pairs (image i = text i = 2.5 e_i): cosines are 1 on the diagonal and 0 off it, so
    # with scale s = exp(t) each row's cross-entropy is -log(e^s / (e^s + 2 e^0)) = log(1 + 2 e^-s).
    embeds = 2.5 * torch.eye(3, dtype=torch.float64)
    t = math.log(4.0)  # s = 4
    expected = math.log(1 + 2 * math.exp(-4.0))  # = 0.036 000...
    assert_agrees(clip_loss(embeds, embeds.clone(), t), torch.tensor(expected, dtype=torch.float64))


def test_logit_scale_is_clamped_at_100_and_stops_learning_there(seed):
    image = random_tensor((6, 8), seed=seed, dtype=torch.float64)
    text = random_tensor((6, 8), seed=seed + 1, dtype=torch.float64)
    above = torch.tensor(math.log(100) + 0.7, dtype=torch.float64, requires_grad=True)
    clamped = clip_loss(image, text, above)
    clamped.backward()
    assert_agrees(clamped, clip_loss(image, text, math.log(100)), name="loss above the clamp")
    assert above.grad == 0  # torch.clamp passes no gradient outside its range
    below = torch.tensor(math.log(100) - 0.7, dtype=torch.float64, requires_grad=True)
    clip_loss(image, text, below).backward()
    assert below.grad != 0


def test_clip_loss_module_is_initialised_as_clip_and_learns_its_scale(seed):
    module = ClipLoss()  # the parameter is created in float32, so its initial value is compared in float32
    assert_agrees(module.logit_scale.detach(), torch.tensor(math.log(1 / 0.07), dtype=torch.float64), name="init")
    module = module.double()
    image = random_tensor((4, 8), seed=seed, dtype=torch.float64)
    text = random_tensor((4, 8), seed=seed + 1, dtype=torch.float64)
    module(image, text).backward()
    assert module.logit_scale.grad is not None and torch.isfinite(module.logit_scale.grad)
    assert_agrees(module(image, text), clip_loss(image, text, module.logit_scale.detach()), name="module = function")


# ---- NT-Xent ----------------------------------------------------------------------------------------


def _pml_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """pytorch-metric-learning's NTXentLoss: embeddings [z1; z2], labels [0..N-1; 0..N-1], so each row's one
    positive is the other view and the other 2N - 2 rows are its negatives; the mean over the 2N pairs."""
    n = z1.shape[0]
    return NTXentLoss(temperature=temperature)(torch.cat([z1, z2]), torch.cat([torch.arange(n), torch.arange(n)]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, d, temperature", [(2, 3, 0.5), (5, 16, 0.1), (9, 7, 1.0)])
def test_nt_xent_matches_pytorch_metric_learning(seed, dtype, n, d, temperature):
    z1 = random_tensor((n, d), seed=seed, dtype=torch.float64).requires_grad_()
    z2 = random_tensor((n, d), seed=seed + 1, dtype=torch.float64).requires_grad_()
    gold = nt_xent_loss(z1, z2, temperature)
    grad_gold = torch.autograd.grad(gold, (z1, z2))
    low = [z.detach().to(dtype).requires_grad_() for z in (z1, z2)]
    baseline = nt_xent_loss(*low, temperature)
    grad_baseline = torch.autograd.grad(baseline, low)
    cand_in = [z.detach().to(dtype).requires_grad_() for z in (z1, z2)]
    candidate = _pml_nt_xent(*cand_in, temperature)
    grad_candidate = torch.autograd.grad(candidate, cand_in)
    assert_agrees(candidate.detach(), gold.detach(), baseline.detach(), name="pytorch-metric-learning NTXentLoss")
    for name, c, g, b in zip(("dz1", "dz2"), grad_candidate, grad_gold, grad_baseline, strict=True):
        assert_agrees(c, g, b, gradient=True, name=name)


def test_nt_xent_hand_computed_two_examples():
    # View one: a = (3, 4) -> (0.6, 0.8) and b = (1, 0). View two: c = (0, 2) -> (0, 1) and d = (1, 0).
    # Positives: a<->c, b<->d. Cosines: ab 0.6, ac 0.8, ad 0.6, bc 0, bd 1, cd 0. With tau = 0.5 every
    # similarity doubles:
    #   row a: positive c 1.6, others b 1.2, d 1.2   -> -1.6 + log(e^1.2 + e^1.6 + e^1.2)
    #   row b: positive d 2.0, others a 1.2, c 0     -> -2.0 + log(e^1.2 + e^0 + e^2)
    #   row c: positive a 1.6, others b 0,   d 0     -> -1.6 + log(e^1.6 + 2)
    #   row d: positive b 2.0, others a 1.2, c 0     -> the same as row b
    row_a = -1.6 + math.log(2 * math.exp(1.2) + math.exp(1.6))  # 0.7933
    row_b = -2.0 + math.log(math.exp(1.2) + 1 + math.exp(2.0))  # 0.4440
    row_c = -1.6 + math.log(math.exp(1.6) + 2)  # 0.3370
    expected = (row_a + 2 * row_b + row_c) / 4
    z1 = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    z2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]], dtype=torch.float64)
    assert_agrees(nt_xent_loss(z1, z2, 0.5), torch.tensor(expected, dtype=torch.float64), name="hand case")


def test_nt_xent_properties(seed):
    z1 = random_tensor((6, 10), seed=seed, dtype=torch.float64)
    z2 = random_tensor((6, 10), seed=seed + 1, dtype=torch.float64)
    loss = nt_xent_loss(z1, z2, 0.3)
    assert_agrees(nt_xent_loss(z2, z1, 0.3), loss, name="swapping the views")
    permutation = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
    assert_agrees(nt_xent_loss(z1[permutation], z2[permutation], 0.3), loss, name="permuting examples")
    row_scales = random_tensor((6, 1), seed=seed + 2, dtype=torch.float64).abs() * 10
    assert_agrees(nt_xent_loss(z1 * row_scales, z2, 0.3), loss, name="rescaling rows (cosine)")
    # Every embedding the same vector: all 2N - 1 candidates tie, each row costs log(2N - 1).
    same = z1[:1].expand(6, 10)
    assert_agrees(nt_xent_loss(same, same, 0.3), torch.tensor(math.log(11), dtype=torch.float64), name="all tied")
    # Breaking a positive pair raises the loss: the positive of example 0 replaced by a negated copy.
    aligned = nt_xent_loss(z1, z1 + 0.01 * z2, 0.3)
    broken = z1.clone()
    broken[0] = -z1[0]
    assert nt_xent_loss(z1, broken + 0.01 * z2, 0.3) > aligned


def test_nt_xent_gradcheck(seed):
    z1 = random_tensor((3, 4), seed=seed, dtype=torch.float64).requires_grad_()
    z2 = random_tensor((3, 4), seed=seed + 1, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, 0.2), (z1, z2))


# ---- bad input --------------------------------------------------------------------------------------


def test_bad_inputs_raise_naming_the_argument():
    good = torch.randn(4, 8)
    cases = [
        (lambda: clip_loss(good[0], good, 1.0), ValueError, "image_embeds must have shape \\(B, D\\)"),
        (lambda: clip_loss(good, torch.randn(5, 8), 1.0), ValueError, "must have the same shape"),
        (lambda: clip_loss(good, good.double(), 1.0), TypeError, "share a dtype"),
        (lambda: clip_loss(good.long(), good.long(), 1.0), TypeError, "image_embeds must be a floating-point"),
        (lambda: clip_loss(good[:1], good[:1], 1.0), ValueError, "batch of at least 2"),
        (lambda: clip_loss(good, good, torch.ones(2)), ValueError, "logit_scale must be a scalar"),
        (lambda: clip_loss(good, good, 1.0, max_logit_scale=0), ValueError, "max_logit_scale must be"),
        (lambda: ClipLoss(init_temperature=0), ValueError, "init_temperature must be"),
        (lambda: nt_xent_loss(good, good, 0.0), ValueError, "temperature must be"),
        (lambda: nt_xent_loss(good, good[:3]), ValueError, "z1 and z2 must have the same shape"),
        (lambda: nt_xent_loss(good.numpy(), good), TypeError, "z1 must be a torch.Tensor"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
