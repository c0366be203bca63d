"""reference/clip.py against transformers.CLIPModel (tiny config, weights copied).

gold = our ClipModel in float64; candidate = transformers' CLIPModel (eval mode, SDPA attention: its eager path
takes the softmax in float32 even for float64 inputs) in the dtype under test; baseline = ours in that dtype.
Every parameter is redrawn at random before the copy (transformers initialises LayerNorms to 1/0, which would
hide a swapped or skipped one), the logit scale included (below the clamp at 100, which transformers does not
apply). Captions end with the eos token at random lengths and are padded with the eos id after it, so pooling
at the *first* eos is exercised.
"""

import math

import pytest
import torch
import transformers

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor, randomize_parameters
from reference.clip import ClipConfig, ClipModel

VOCAB, EOS, PAD = 43, 42, 0
DTYPES = [torch.float64, torch.float32]


def _their_config() -> transformers.CLIPConfig:
    text = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD)  # eos 2: legacy path
    vision = dict(hidden_size=24, intermediate_size=36, num_hidden_layers=2, num_attention_heads=4, image_size=12,
                  patch_size=4)  # 9 patches + [CLS] = 10 tokens; head dims 4 and 6
    return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=12,
                                   attn_implementation="sdpa")


def _models(seed: int, backend: str = "reference"):
    """(ours, theirs) in float64 with the same random weights."""
    config = _their_config()
    theirs = randomize_parameters(transformers.CLIPModel(config).double().eval(), seed, unit_scale=("embedding",))
    with torch.no_grad():
        # A random scale in (1, 100): below the clamp, and far from the initial value.
        theirs.logit_scale.fill_(float(torch.rand((), generator=torch.Generator().manual_seed(seed))) * math.log(100))
    ours = ClipModel(ClipConfig.from_transformers(config, backend=backend)).double()
    return ours.copy_from_transformers(theirs), theirs


def _inputs(seed: int, batch: int, length: int):
    """Captions of random length (at least 2) ending in eos and padded after it; one row without padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, EOS, (batch, length), generator=g)
    lengths = torch.randint(2, length + 1, (batch,), generator=g)
    lengths[0] = length
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, N), 1 = real
    ids[torch.arange(batch), lengths - 1] = EOS
    ids[attention_mask == 0] = EOS  # padding with the eos id (as CLIP's tokenizer does): pooling takes the first
    pixels = random_tensor((batch, 3, 12, 12), seed=seed + 1, dtype=torch.float64)
    return ids, pixels, attention_mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, length", [(2, 5), (5, 11)])  # the smallest batch; an odd batch, odd length
def test_clip_model_matches_transformers(seed, dtype, batch, length):
    ours, theirs = _models(seed)
    ids, pixels, mask = _inputs(seed, batch, length)
    gold = ours(ids, pixels, mask, return_loss=True)
    baseline = ours.to(dtype)(ids, pixels.to(dtype), mask, return_loss=True)
    with torch.no_grad():
        candidate = theirs.to(dtype)(input_ids=ids, pixel_values=pixels.to(dtype), attention_mask=mask,
                                     return_loss=True)
    for name in ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds", "loss"):
        assert_agrees(getattr(candidate, name), getattr(gold, name).detach(), getattr(baseline, name).detach(),
                      name=f"CLIPModel {name}")


def test_clip_model_gradients_match_transformers(seed):
    """d loss / d pixels, d loss / d logit_scale and d loss / d (a text query weight), both models in float64."""
    ours, theirs = _models(seed)
    ids, pixels, mask = _inputs(seed, 4, 9)
    grads = []
    for model, run in ((ours, lambda p: ours(ids, p, mask, return_loss=True).loss),
                       (theirs, lambda p: theirs(input_ids=ids, pixel_values=p, attention_mask=mask,
                                                 return_loss=True).loss)):
        p = pixels.clone().requires_grad_()
        query = (model.text_model.encoder.layers[1].self_attn.q_proj.weight)
        grads.append(torch.autograd.grad(run(p), (p, model.logit_scale, query)))
    for name, candidate, gold in zip(("pixel_values", "logit_scale", "text query weight"), grads[1], grads[0],
                                     strict=True):
        assert_agrees(candidate, gold, gradient=True, name=f"CLIPModel d loss / d {name}")


def test_text_pools_the_first_eos_and_ignores_what_follows(seed):
    """Causal attention: tokens after the first eos (padding or not) cannot change the text embedding."""
    ours, _ = _models(seed)
    ids, _, _ = _inputs(seed, 3, 8)
    ids[:, 4] = EOS
    changed = ids.clone()
    changed[:, 5:] = torch.randint(1, EOS, (3, 3), generator=torch.Generator().manual_seed(seed + 5))
    before, after = ours.encode_text(ids), ours.encode_text(changed)
    assert_agrees(after, before, name="text embedding after changing the tokens past the first eos")
    changed[:, 2] = (changed[:, 2] + 1) % EOS  # a token before it does change the embedding
    assert (ours.encode_text(changed) - before).abs().max() > 1e-6


def test_backend_reaches_every_attention_layer():
    model = ClipModel(ClipConfig.from_transformers(_their_config(), backend="sdpa"))
    assert [m.backend for m in model.modules() if hasattr(m, "backend")] == ["sdpa"] * 4


def test_bad_inputs_are_rejected(seed):
    ours, _ = _models(seed)
    ids, pixels, mask = _inputs(seed, 2, 6)
    no_eos = ids.clone()
    no_eos[no_eos == EOS] = 5
    padded_first = mask.clone()
    padded_first[1, 0] = 0
    cases = [
        (dict(input_ids=no_eos), ValueError, "must hold the end-of-text token"),
        (dict(input_ids=ids + VOCAB), ValueError, "input_ids must lie in"),
        (dict(attention_mask=mask[:, :-1]), ValueError, "attention_mask must have the shape of input_ids"),
        (dict(attention_mask=padded_first), ValueError, "first token of every row"),
        (dict(pixel_values=pixels[:1]), ValueError, "one image per text"),
        (dict(pixel_values=pixels[:, :, :8]), ValueError, "must equal image_size"),
    ]
    for change, error, message in cases:
        arguments = {**dict(input_ids=ids, pixel_values=pixels, attention_mask=mask), **change}
        with pytest.raises(error, match=message):
            ours(**arguments)
