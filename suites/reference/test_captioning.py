"""reference/captioning.py: ClipCap-style prefix captioning, against transformers' GPT-2 and by what it must do.

* Oracle: ``GPT2LMHeadModel`` called as ClipCap's authors call it, ``inputs_embeds`` = [prefix; token embeddings]
  and ``labels`` with -100 on the prefix, weights copied: logits, loss (full and right-padded captions) and
  gradients agree; greedy captions equal ``GPT2LMHeadModel.generate(inputs_embeds=prefix)``.
* A toy batch is overfit (the loss falls from ~log(V) below a stated bound), after which greedy captioning
  reproduces the training captions; greedy captioning is deterministic and independent of the batch.
* The prefix has shape (B, P, E), and malformed inputs are rejected with errors naming the argument.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from oracle_pairs import gpt2_pair

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.captioning import PrefixCaptioner, PrefixCaptionerConfig
from reference.generation import DecoderLM, DecoderLMConfig

VOCAB, CONTEXT, D_MODEL = 61, 16, 32
IMAGE_DIM, PREFIX = 24, 4
BATCH, CAPTION = 4, 7


def _captioner(seed: int) -> PrefixCaptioner:
    torch.manual_seed(seed)
    decoder = DecoderLM(DecoderLMConfig(vocab_size=VOCAB, context_length=CONTEXT, d_model=D_MODEL, num_layers=2,
                                        num_heads=4))
    return PrefixCaptioner(PrefixCaptionerConfig(image_dim=IMAGE_DIM, prefix_length=PREFIX), decoder)


def _toy_batch(seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    images = random_tensor((BATCH, IMAGE_DIM), seed=seed, dtype=dtype)
    captions = torch.randint(0, VOCAB, (BATCH, CAPTION), generator=torch.Generator().manual_seed(seed))
    return images, captions


def test_prefix_has_shape_batch_prefix_length_model_width(seed):
    captioner = _captioner(seed)
    images, _ = _toy_batch(seed)
    prefix = captioner.prefix(images)
    assert prefix.shape == (BATCH, PREFIX, D_MODEL)
    assert not torch.equal(prefix[0], prefix[1]), "different images must give different prefixes"


def _gpt2_pair(seed: int, backend: str = "reference") -> tuple[transformers.GPT2LMHeadModel, PrefixCaptioner]:
    """GPT-2 with random weights (LayerNorms included, std 0.2 so the logits are far from uniform) and a
    captioner whose decoder has them copied; both in float64."""
    gpt2, decoder = gpt2_pair(seed, vocab_size=VOCAB, context=CONTEXT, width=D_MODEL, weight_scale=0.2,
                              backend=backend)
    torch.manual_seed(seed)  # the mapping's initial weights
    return gpt2, PrefixCaptioner(PrefixCaptionerConfig(image_dim=IMAGE_DIM, prefix_length=PREFIX), decoder).double()


def _clipcap_with_gpt2(gpt2, mapping, images, captions, mask=None):
    """ClipCap's training step as its authors wrote it, on transformers' GPT-2: the prefix and the caption's
    token embeddings go in as ``inputs_embeds``, and ``labels`` (-100 on the prefix and the padding) mark what
    is scored. Returns (logits from the prefix's last position on, loss, GPT-2's own loss).

    GPT-2's own loss (``labels=``) upcasts the logits to float32, so it is exact only to float32; the loss
    used for the float64 comparison is the same shift-and-ignore with ``F.cross_entropy`` in the model's dtype.
    """
    prefix = mapping(images).view(images.shape[0], PREFIX, D_MODEL)  # (B, P, E)
    tokens = gpt2.transformer.wte(captions)  # (B, L, E)
    ignored = torch.full((images.shape[0], PREFIX), -100)
    labels = torch.cat([ignored, captions if mask is None else captions.masked_fill(mask == 0, -100)], dim=1)
    out = gpt2(inputs_embeds=torch.cat([prefix, tokens], dim=1), labels=labels)  # (B, P + L, V)
    loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    return out.logits[:, PREFIX - 1 : -1], loss, out.loss  # (B, L, V), scalar, scalar (float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "right-padded"])
def test_logits_loss_and_gradients_match_gpt2_with_inputs_embeds(seed, dtype, masked):
    gpt2, captioner = _gpt2_pair(seed)
    images, captions = _toy_batch(seed, dtype=torch.float64)
    mask = (torch.arange(CAPTION)[None, :] < torch.tensor([[7], [3], [1], [5]])).long() if masked else None

    def ours(model, x):
        x = x.detach().requires_grad_()
        logits, loss = model(x, captions), model.loss(x, captions, mask)
        grads = torch.autograd.grad(loss, [x, model.mapping[0].weight, model.decoder.token_embedding.weight])
        return logits.detach(), loss.detach(), grads

    gold = ours(captioner, images)
    baseline = ours(copy.deepcopy(captioner).to(dtype), images.to(dtype))

    gpt2, mapping = gpt2.to(dtype), copy.deepcopy(captioner.mapping).to(dtype)  # the mapping MLP is ours
    x = images.to(dtype).requires_grad_()
    logits, loss, gpt2_loss = _clipcap_with_gpt2(gpt2, mapping, x, captions, mask)
    grads = torch.autograd.grad(loss, [x, mapping[0].weight, gpt2.transformer.wte.weight])

    assert_agrees(logits.detach(), gold[0], baseline[0], name="GPT2LMHeadModel(inputs_embeds) logits")
    assert_agrees(loss.detach(), gold[1], baseline[1], name="loss on GPT-2's logits")
    assert_agrees(gpt2_loss.detach().float(), gold[1], name="GPT-2's own loss (labels=, float32)")
    for name, cand, g, b in zip(("image embeddings", "mapping W_1", "token embeddings"), grads, gold[2], baseline[2],
                                strict=True):
        assert_agrees(cand, g, b, gradient=True, name=f"d loss / d {name}")


def test_prefix_decoder_runs_through_the_attention_seam(seed):
    # With backend="sdpa" the decoder's attention is torch's; the float64 reference backend (checked against
    # GPT-2 above) is gold. float64 on both sides: the element-wise float64 rule, no baseline.
    _, ours = _gpt2_pair(seed)
    _, sdpa = _gpt2_pair(seed, backend="sdpa")
    images, captions = _toy_batch(seed, dtype=torch.float64)
    x_gold, x_sdpa = images.clone().requires_grad_(), images.clone().requires_grad_()
    gold_loss, sdpa_loss = ours.loss(x_gold, captions), sdpa.loss(x_sdpa, captions)
    assert_agrees(sdpa(images, captions).detach(), ours(images, captions).detach(), name="sdpa backend logits")
    assert_agrees(sdpa_loss.detach(), gold_loss.detach(), name="sdpa backend loss")
    assert_agrees(torch.autograd.grad(sdpa_loss, x_sdpa)[0], torch.autograd.grad(gold_loss, x_gold)[0],
                  gradient=True, name="sdpa backend d loss / d image embeddings")


def test_greedy_captions_match_gpt2_generate_from_inputs_embeds(seed):
    gpt2, captioner = _gpt2_pair(seed)
    images, _ = _toy_batch(seed, dtype=torch.float64)
    with torch.no_grad():
        prefix = captioner.prefix(images)
        theirs = gpt2.generate(inputs_embeds=prefix, attention_mask=torch.ones(BATCH, PREFIX, dtype=torch.long),
                               max_new_tokens=CONTEXT - PREFIX, do_sample=False)
    assert torch.equal(captioner.caption(images, CONTEXT - PREFIX), theirs)


def test_gradient_reaches_the_mapping_network_and_the_decoder(seed):
    captioner = _captioner(seed)
    captioner.loss(*_toy_batch(seed)).backward()
    for name, param in captioner.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} gets no gradient"


# The toy batch: 4 random image embeddings, each with a random 7-token caption over 61 tokens.
# * At GPT-2's initialization (std 0.02, head tied to the embeddings) the logits have std ~0.02 * sqrt(E) = 0.1,
#   so the first loss is log(61) = 4.11 plus ~0.01: the test checks it lies within 0.25 of log(V).
# * 0.05 nats per token means the right token has probability ~0.95 on average; with a mapping network and two
#   trainable decoder layers for 28 tokens, Adam (lr 1e-2) gets there in 27 to 32 steps (40 seeds tried);
#   200 steps leave ~6x headroom. float32 is enough: the bound is ~1e5 times float32's rounding of the loss.
# * Greedy captions reproduce the training captions when every caption token is the argmax given the earlier
#   ones, which holds when every token's loss is below log 2 (probability above 1/2): asserted separately.
OVERFIT_BOUND = 0.05  # nats per caption token
OVERFIT_STEPS = 200


def test_toy_batch_is_overfit_and_greedy_captions_reproduce_it(seed):
    captioner = _captioner(seed)
    images, captions = _toy_batch(seed)
    optimizer = torch.optim.Adam(captioner.parameters(), lr=1e-2)
    first = captioner.loss(images, captions).item()
    assert abs(first - math.log(VOCAB)) < 0.25, f"initial loss {first:.3f} is not near log(V) = {math.log(VOCAB):.3f}"
    losses = []
    for _ in range(OVERFIT_STEPS):
        loss = captioner.loss(images, captions)
        losses.append(loss.item())
        if losses[-1] < OVERFIT_BOUND:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < OVERFIT_BOUND, f"loss {losses[-1]:.4f} after {len(losses)} steps (started at {first:.3f})"

    with torch.no_grad():
        token_losses = F.cross_entropy(captioner(images, captions).transpose(1, 2), captions, reduction="none")
    assert token_losses.max() < math.log(2), f"a caption token still has loss {token_losses.max():.3f}"
    assert torch.equal(captioner.caption(images, CAPTION), captions)


def test_greedy_captioning_is_deterministic_and_independent_of_the_batch(seed):
    captioner = _captioner(seed).double()  # float64: the argmax check below must not hinge on rounding
    with torch.no_grad():  # sharpen the untrained model: GPT-2's init gives near-uniform, near-tied logits
        for param in captioner.parameters():
            param.mul_(10)
    images, _ = _toy_batch(seed, dtype=torch.float64)
    captions = captioner.caption(images, 9)
    assert captions.shape == (BATCH, 9) and captions.dtype == torch.long
    assert torch.equal(captioner.caption(images, 9), captions)
    for row in range(BATCH):
        assert torch.equal(captioner.caption(images[row : row + 1], 9)[0], captions[row])
    # Greedy means each token is the argmax after the prefix and the tokens before it.
    logits = captioner(images, captions)
    assert torch.equal(logits.argmax(dim=-1), captions)


def test_bad_inputs_are_rejected(seed):
    captioner = _captioner(seed)
    images, captions = _toy_batch(seed)
    with pytest.raises(ValueError, match=r"image_embeddings must have shape \(B, image_dim\) = \(B, 24\)"):
        captioner.prefix(images[:, :-1])
    with pytest.raises(ValueError, match=r"image_embeddings must have shape \(B, image_dim\)"):
        captioner.prefix(images[0])
    with pytest.raises(TypeError, match="image_embeddings must be a floating-point tensor"):
        captioner.prefix(images.long())
    with pytest.raises(ValueError, match=r"captions must have the batch size of image_embeddings \(4\), got 3"):
        captioner.loss(images, captions[:3])
    with pytest.raises(TypeError, match="captions must be an int32 or int64 tensor"):
        captioner.loss(images, captions.double())
    with pytest.raises(ValueError, match=r"captions must have shape \(B, L\)"):
        captioner.loss(images, captions[:, :0])
    too_long = torch.zeros(BATCH, CONTEXT - PREFIX + 2, dtype=torch.long)
    with pytest.raises(ValueError, match="captions: length 14 does not fit after the prefix of 4"):
        captioner.loss(images, too_long)
    with pytest.raises(ValueError, match="caption_mask must have the shape of captions"):
        captioner.loss(images, captions, torch.ones(BATCH, CAPTION - 1))
    with pytest.raises(ValueError, match="max_length .* must fit after the prefix: at most 12 tokens"):
        captioner.caption(images, CONTEXT - PREFIX + 1)
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        captioner.caption(images, 0)
    with pytest.raises(ValueError, match="prefix_length must be a positive integer"):
        PrefixCaptionerConfig(image_dim=IMAGE_DIM, prefix_length=0)
    with pytest.raises(ValueError, match=r"prefix_length \(16\) must be shorter than the decoder's context_length"):
        PrefixCaptioner(PrefixCaptionerConfig(image_dim=IMAGE_DIM, prefix_length=CONTEXT), captioner.decoder)
    with pytest.raises(TypeError, match="decoder must be a reference.generation.DecoderLM"):
        PrefixCaptioner(PrefixCaptionerConfig(image_dim=IMAGE_DIM), torch.nn.Linear(2, 2))
