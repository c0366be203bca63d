"""reference/fusion.py: co-attention transformer, multimodal fusion model, image-text classifier.

No library has the whole models, so the checks are properties that any correct implementation has, on fresh
random inputs in float64 (compared through the agreement policy, gold = the unpermuted / unchanged run):

* permutation equivariance: with position embeddings off, permuting one stream's tokens permutes its
  outputs and leaves the other stream's unchanged; the pooled models' outputs do not change at all;
* padding invariance: changing the values in padded slots changes no real token's output;
* gradient flow: non-zero, finite gradients reach both input streams (across the co-attention) and every
  parameter; joint training through the task head lowers the loss and moves every parameter group;
* float32 against the float64 gold with the element-wise rule (no baseline: the float32 run is the
  candidate, never its own baseline), and each of these checks is shown to fail for an output moved by 1e-3;
* backend="sdpa" against the reference backend.
Libraries provide the parts: one co-attention layer against transformers' LXMERT cross-modality layer
(``LxmertXLayer``, copied weights; LXMERT shares one cross-attention between the two directions, so both of
ours get its weights), and against torch.nn.MultiheadAttention (kdim/vdim, streams of different widths) +
torch.nn.TransformerEncoderLayer.
"""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusebench.agreement import assert_agrees, check
from fusebench.inputs import random_tensor, randomize_parameters
from reference.fusion import (
    CoAttentionLayer,
    CoAttentionTransformer,
    FusionConfig,
    ImageTextClassifier,
    MultimodalFusionModel,
    masked_mean,
)
from reference.vit import ViTConfig

CONFIG = FusionConfig(vocab_size=37, max_text_length=32, text_dim=16, image_dim=24, num_heads=4, ffn_ratio=2,
                      num_text_layers=1, num_image_layers=1, num_fusion_layers=2, image_feature_dim=12,
                      num_outputs=3, use_position_embeddings=False)
VISION = ViTConfig(image_size=(8, 12), patch_size=4, num_channels=3, hidden_size=20, num_layers=1, num_heads=4,
                   intermediate_size=24, use_position_embeddings=False)  # 2 x 3 patches + [CLS]
B, NT, NI = 3, 11, 7  # batch, text tokens, image regions: no two alike, none a power of two


def _padding(batch: int, length: int, seed: int) -> torch.Tensor:
    """(B, N) bool, True = padding: a random suffix of each row except the first, at least one real token."""
    lengths = torch.randint(1, length + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    lengths[0] = length
    return torch.arange(length)[None, :] >= lengths[:, None]


def _streams(seed):
    return (random_tensor((B, NT, CONFIG.text_dim), seed=seed, dtype=torch.float64),
            random_tensor((B, NI, CONFIG.image_dim), seed=seed + 1, dtype=torch.float64),
            _padding(B, NT, seed + 2), _padding(B, NI, seed + 3))


def _co_attention(seed, config=CONFIG):
    torch.manual_seed(seed)
    return randomize_parameters(CoAttentionTransformer(config).double(), seed)


def _assert_sensitive(candidate: torch.Tensor, gold: torch.Tensor, name: str) -> None:
    """The check that just passed must fail for an output moved by 1e-3: proof that it can fail at all."""
    assert not check(candidate + 1e-3, gold, name=name).passed, f"{name}: a 1e-3 error passes the check"


def _permutation(n: int, seed: int) -> torch.Tensor:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm if not torch.equal(perm, torch.arange(n)) else perm.roll(1)


# --------------------------------------------------------------------------------------------------
# CoAttentionTransformer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["text", "image"])
def test_co_attention_is_permutation_equivariant_in_each_stream(seed, stream):
    model = _co_attention(seed)
    text, image, text_pad, image_pad = _streams(seed)
    out_text, out_image = model(text, image, text_padding_mask=text_pad, image_padding_mask=image_pad)
    if stream == "text":
        perm = _permutation(NT, seed)
        new_text, new_image = model(text[:, perm], image, text_padding_mask=text_pad[:, perm],
                                    image_padding_mask=image_pad)
        assert_agrees(new_text, out_text[:, perm], name="text outputs, text permuted")
        assert_agrees(new_image, out_image, name="image outputs, text permuted")
    else:
        perm = _permutation(NI, seed)
        new_text, new_image = model(text, image[:, perm], text_padding_mask=text_pad,
                                    image_padding_mask=image_pad[:, perm])
        assert_agrees(new_image, out_image[:, perm], name="image outputs, image permuted")
        assert_agrees(new_text, out_text, name="text outputs, image permuted")


def test_co_attention_ignores_the_values_of_padded_tokens(seed):
    model = _co_attention(seed)
    text, image, text_pad, image_pad = _streams(seed)
    text_pad[1, 6:], image_pad[2, 2:] = True, True  # make sure both streams have padding
    out_text, out_image = model(text, image, text_padding_mask=text_pad, image_padding_mask=image_pad)
    changed_text = torch.where(text_pad[..., None], random_tensor(text.shape, seed=seed + 7, dtype=torch.float64,
                                                                  scale=100.0), text)
    changed_image = torch.where(image_pad[..., None], random_tensor(image.shape, seed=seed + 8, dtype=torch.float64,
                                                                    scale=100.0), image)
    new_text, new_image = model(changed_text, changed_image, text_padding_mask=text_pad, image_padding_mask=image_pad)
    assert_agrees(new_text[~text_pad], out_text[~text_pad], name="real text tokens, padding changed")
    assert_agrees(new_image[~image_pad], out_image[~image_pad], name="real image regions, padding changed")


def test_co_attention_connects_the_streams(seed):
    # Without this, the equivariance tests above would also pass for two streams that never meet.
    model = _co_attention(seed)
    text, image, _, _ = _streams(seed)
    out_text, out_image = model(text, image)
    other_image = image.clone()
    other_image[:, 0] = random_tensor((B, CONFIG.image_dim), seed=seed + 9, dtype=torch.float64)
    other_text = text.clone()
    other_text[:, 0] = random_tensor((B, CONFIG.text_dim), seed=seed + 10, dtype=torch.float64)
    assert (model(text, other_image)[0] - out_text).abs().amin(dim=(1, 2)).gt(0).all()
    assert (model(other_text, image)[1] - out_image).abs().amin(dim=(1, 2)).gt(0).all()


def test_co_attention_gradients_reach_both_inputs_and_every_parameter(seed):
    model = _co_attention(seed)
    text, image, text_pad, image_pad = _streams(seed)
    text.requires_grad_()
    image.requires_grad_()
    out_text, out_image = model(text, image, text_padding_mask=text_pad, image_padding_mask=image_pad)
    # Across the streams: a loss on the text outputs alone must reach the image input, and the reverse.
    w_text = random_tensor(out_text.shape, seed=seed + 4, dtype=torch.float64)
    w_image = random_tensor(out_image.shape, seed=seed + 5, dtype=torch.float64)
    d_image, = torch.autograd.grad((out_text * w_text).sum(), image, retain_graph=True)
    d_text, = torch.autograd.grad((out_image * w_image).sum(), text, retain_graph=True)
    for name, grad, pad in (("d image / text loss", d_image, image_pad), ("d text / image loss", d_text, text_pad)):
        assert torch.isfinite(grad).all(), name
        assert grad[~pad].abs().sum(-1).gt(0).all(), f"{name}: a real token gets no gradient"
        assert torch.equal(grad[pad], torch.zeros_like(grad[pad])), f"{name}: padding gets a gradient"
    ((out_text * w_text).sum() + (out_image * w_image).sum()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"{name} gets no gradient"


def _copy_mha(ours, theirs: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        e = ours.embed_dim
        for proj, weight, bias in ((ours.q_proj, theirs.q_proj_weight, theirs.in_proj_bias[:e]),
                                   (ours.k_proj, theirs.k_proj_weight, theirs.in_proj_bias[e:2 * e]),
                                   (ours.v_proj, theirs.v_proj_weight, theirs.in_proj_bias[2 * e:])):
            proj.weight.copy_(weight)
            proj.bias.copy_(bias)
        ours.out_proj.load_state_dict(theirs.out_proj.state_dict())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_co_attention_layer_matches_torch_modules(seed, dtype):
    torch.manual_seed(seed)
    dt, di, heads = CONFIG.text_dim, CONFIG.image_dim, CONFIG.num_heads
    text_cross = nn.MultiheadAttention(dt, heads, kdim=di, vdim=di, batch_first=True).double()
    image_cross = nn.MultiheadAttention(di, heads, kdim=dt, vdim=dt, batch_first=True).double()
    text_norm, image_norm = nn.LayerNorm(dt, eps=1e-12).double(), nn.LayerNorm(di, eps=1e-12).double()
    text_self, image_self = (nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, activation="gelu",
                                                        layer_norm_eps=1e-12, batch_first=True).double().eval()
                             for d in (dt, di))
    torch_modules = nn.ModuleList([text_cross, image_cross, text_norm, image_norm, text_self, image_self])
    randomize_parameters(torch_modules.double(), seed)
    ours = CoAttentionLayer(CONFIG).double()
    _copy_mha(ours.text_cross.attn, text_cross)
    _copy_mha(ours.image_cross.attn, image_cross)
    ours.text_cross.norm.load_state_dict(text_norm.state_dict())
    ours.image_cross.norm.load_state_dict(image_norm.state_dict())
    ours.text_self.copy_from_torch(text_self)
    ours.image_self.copy_from_torch(image_self)

    text, image, text_pad, image_pad = _streams(seed)
    gold = ours(text, image, text_pad, image_pad)
    baseline = ours.to(dtype)(text.to(dtype), image.to(dtype), text_pad, image_pad)
    torch_modules.to(dtype)
    t, i = text.to(dtype), image.to(dtype)
    with torch.inference_mode(False):  # keep torch's encoder layer off its fast path, which drops padded rows
        t_x = text_norm(t + text_cross(t, i, i, key_padding_mask=image_pad, need_weights=False)[0])
        i_x = image_norm(i + image_cross(i, t, t, key_padding_mask=text_pad, need_weights=False)[0])
        candidate = (text_self(t_x, src_key_padding_mask=text_pad), image_self(i_x, src_key_padding_mask=image_pad))
    for name, cand, g, base, pad in zip(("text", "image"), candidate, gold, baseline, (text_pad, image_pad),
                                        strict=True):
        keep = ~pad[..., None]  # torch's fast path may leave padded rows unspecified: compare real tokens
        assert_agrees(cand * keep, g * keep, base * keep, name=f"co-attention layer, {name} stream")


def _copy_linear(ours: nn.Linear, theirs: nn.Linear) -> None:
    ours.load_state_dict(theirs.state_dict())


def _copy_lxmert_attention(ours, theirs_attention, theirs_output) -> None:
    """LXMERT's (query, key, value) + output dense into our MultiHeadAttention (q, k, v, out projections)."""
    for mine, their in ((ours.q_proj, theirs_attention.query), (ours.k_proj, theirs_attention.key),
                        (ours.v_proj, theirs_attention.value), (ours.out_proj, theirs_output.dense)):
        _copy_linear(mine, their)


def _from_lxmert(ours: CoAttentionLayer, theirs) -> None:
    """Copy an ``LxmertXLayer`` into a CoAttentionLayer. LXMERT has ONE cross-attention (``visual_attention``)
    used in both directions; ours has one per direction, so both get its weights: the same function."""
    shared = theirs.visual_attention
    for block in (ours.text_cross, ours.image_cross):
        _copy_lxmert_attention(block.attn, shared.att, shared.output)
        block.norm.load_state_dict(shared.output.LayerNorm.state_dict())
    for layer, self_att, inter, output in ((ours.text_self, theirs.lang_self_att, theirs.lang_inter,
                                            theirs.lang_output),
                                           (ours.image_self, theirs.visn_self_att, theirs.visn_inter,
                                            theirs.visn_output)):
        _copy_lxmert_attention(layer.self_attn, self_att.self, self_att.output)
        layer.norm1.load_state_dict(self_att.output.LayerNorm.state_dict())
        _copy_linear(layer.feed_forward.linear1, inter.dense)
        _copy_linear(layer.feed_forward.linear2, output.dense)
        layer.norm2.load_state_dict(output.LayerNorm.state_dict())


def _additive(padding: torch.Tensor) -> torch.Tensor:
    """(B, N) bool padding -> LXMERT's extended additive mask (B, 1, 1, N): 0 to attend, dtype min to drop."""
    additive = torch.zeros(padding.shape, dtype=torch.float64).masked_fill(padding, torch.finfo(torch.float64).min)
    return additive[:, None, None, :]


def test_co_attention_layer_matches_transformers_lxmert_cross_modality_layer(seed):
    from transformers import LxmertConfig
    from transformers.models.lxmert.modeling_lxmert import LxmertXLayer

    # LXMERT's streams share one width; GELU (erf) and LayerNorm eps 1e-12 like ours.
    config = dataclasses.replace(CONFIG, image_dim=CONFIG.text_dim)
    lxmert = LxmertConfig(hidden_size=config.text_dim, num_attention_heads=config.num_heads,
                          intermediate_size=config.ffn_ratio * config.text_dim, hidden_act="gelu",
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    theirs = randomize_parameters(LxmertXLayer(lxmert).double(), seed).eval()
    ours = CoAttentionLayer(config).double()
    _from_lxmert(ours, theirs)
    text = random_tensor((B, NT, config.text_dim), seed=seed, dtype=torch.float64)
    image = random_tensor((B, NI, config.image_dim), seed=seed + 1, dtype=torch.float64)
    text_pad, image_pad = _padding(B, NT, seed + 2), _padding(B, NI, seed + 3)
    gold_text, gold_image = theirs(text, _additive(text_pad), image, _additive(image_pad))
    out_text, out_image = ours(text, image, text_pad, image_pad)
    # Padded query rows are computed by both (they attend to the real keys), so every row is compared.
    assert_agrees(out_text, gold_text, name="co-attention layer vs LxmertXLayer, text (language) stream")
    assert_agrees(out_image, gold_image, name="co-attention layer vs LxmertXLayer, image (vision) stream")


def test_co_attention_float32_agrees_with_float64(seed):
    model = _co_attention(seed)
    text, image, text_pad, image_pad = _streams(seed)
    gold = model(text, image, text_padding_mask=text_pad, image_padding_mask=image_pad)
    low = model.float()(text.float(), image.float(), text_padding_mask=text_pad, image_padding_mask=image_pad)
    for name, cand, g in zip(("text", "image"), low, gold, strict=True):
        assert_agrees(cand, g, name=f"float32 {name} stream")
        _assert_sensitive(cand, g, name=f"float32 {name} stream")


def test_co_attention_backend_is_passed_to_every_attention(seed):
    config = dataclasses.replace(CONFIG, backend="sdpa")
    model = _co_attention(seed, config)
    backends = [m.backend for m in model.modules() if hasattr(m, "backend")]
    assert backends == ["sdpa"] * (4 * CONFIG.num_fusion_layers)  # 2 cross + 2 self per layer
    reference = CoAttentionTransformer(CONFIG).double()
    reference.load_state_dict(model.state_dict())
    text, image, text_pad, image_pad = _streams(seed)
    masks = dict(text_padding_mask=text_pad, image_padding_mask=image_pad)
    for name, cand, gold in zip(("text", "image"), model(text, image, **masks), reference(text, image, **masks),
                                strict=True):
        assert_agrees(cand, gold, name=f"backend=sdpa, {name} stream")


def test_co_attention_rejects_bad_inputs(seed):
    model = _co_attention(seed)
    text, image, text_pad, image_pad = _streams(seed)
    with pytest.raises(ValueError, match=r"text must have shape \(B, N, 16\)"):
        model(text[..., :-1], image)
    with pytest.raises(ValueError, match=r"image must have shape \(B, N, 24\)"):
        model(text, image[0])
    with pytest.raises(ValueError, match="image must have the batch size of text"):
        model(text, image[:1])
    with pytest.raises(TypeError, match="text must be a floating-point tensor"):
        model(text.long(), image)
    with pytest.raises(TypeError, match="text and image must share a dtype"):
        model(text, image.float())
    with pytest.raises(TypeError, match="image_padding_mask must be a bool tensor"):
        model(text, image, image_padding_mask=image_pad.long())
    with pytest.raises(ValueError, match=r"text_padding_mask must have shape \(B, N\) = \(3, 11\)"):
        model(text, image, text_padding_mask=text_pad[:, :-1])
    with pytest.raises(ValueError, match="image_padding_mask leaves a sequence with no real token"):
        model(text, image, image_padding_mask=torch.ones(B, NI, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"image_dim \(30\) must be divisible by num_heads \(4\)"):
        dataclasses.replace(CONFIG, image_dim=30)


# --------------------------------------------------------------------------------------------------
# MultimodalFusionModel
# --------------------------------------------------------------------------------------------------


def _fusion_inputs(seed):
    ids = torch.randint(0, CONFIG.vocab_size, (B, NT), generator=torch.Generator().manual_seed(seed))
    features = random_tensor((B, NI, CONFIG.image_feature_dim), seed=seed + 1, dtype=torch.float64)
    return ids, features, _padding(B, NT, seed + 2), _padding(B, NI, seed + 3)


def _fusion_model(seed, config=CONFIG):
    torch.manual_seed(seed)
    return randomize_parameters(MultimodalFusionModel(config).double(), seed)


def test_fusion_model_output_is_invariant_to_token_and_region_order(seed):
    model = _fusion_model(seed)
    ids, features, text_pad, image_pad = _fusion_inputs(seed)
    gold = model(ids, features, text_padding_mask=text_pad, image_padding_mask=image_pad)
    assert gold.shape == (B, CONFIG.num_outputs)
    pt, pi = _permutation(NT, seed), _permutation(NI, seed + 1)
    permuted = model(ids[:, pt], features[:, pi], text_padding_mask=text_pad[:, pt],
                     image_padding_mask=image_pad[:, pi])
    assert_agrees(permuted, gold, name="fusion model, tokens and regions permuted")


def test_fusion_model_text_positions_break_the_symmetry_when_enabled(seed):
    model = _fusion_model(seed, dataclasses.replace(CONFIG, use_position_embeddings=True))
    ids, features, _, _ = _fusion_inputs(seed)
    perm = torch.arange(NT).roll(1)
    # float64 rounding moves outputs by ~1e-15; a real effect of the positions is far above 1e-10
    assert (model(ids[:, perm], features) - model(ids, features)).abs().max() > 1e-10


def test_fusion_model_ignores_padded_tokens_and_regions(seed):
    model = _fusion_model(seed)
    ids, features, text_pad, image_pad = _fusion_inputs(seed)
    text_pad[1, 4:], image_pad[2, 3:] = True, True
    gold = model(ids, features, text_padding_mask=text_pad, image_padding_mask=image_pad)
    other_ids = torch.where(text_pad, (ids + 5) % CONFIG.vocab_size, ids)
    other_features = torch.where(image_pad[..., None], random_tensor(features.shape, seed=seed + 9,
                                                                     dtype=torch.float64, scale=100.0), features)
    changed = model(other_ids, other_features, text_padding_mask=text_pad, image_padding_mask=image_pad)
    assert_agrees(changed, gold, name="fusion model, padded slots changed")


def test_fusion_model_gradients_reach_both_encoders_and_every_parameter(seed):
    model = _fusion_model(seed)
    ids, features, text_pad, image_pad = _fusion_inputs(seed)
    features.requires_grad_()
    out = model(ids, features, text_padding_mask=text_pad, image_padding_mask=image_pad)
    (out * random_tensor(out.shape, seed=seed + 4, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(features.grad).all() and features.grad[~image_pad].abs().sum(-1).gt(0).all()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"{name} gets no gradient"
    used = torch.unique(ids[~text_pad])
    assert model.text_encoder.token_embeddings.weight.grad[used].abs().sum(-1).gt(0).all()


def test_fusion_model_trains_jointly_through_the_task_head(seed):
    torch.manual_seed(seed)
    model = MultimodalFusionModel(CONFIG).double()  # the default initialization: what training starts from
    ids, features, text_pad, image_pad = _fusion_inputs(seed)
    labels = torch.randint(0, CONFIG.num_outputs, (B,), generator=torch.Generator().manual_seed(seed))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        logits = model(ids, features, text_padding_mask=text_pad, image_padding_mask=image_pad)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Three examples: the joint model memorizes them (over 30 seeds, 12 steps left at most 11% of the first loss).
    assert losses[-1] < 0.5 * losses[0], losses
    for group in ("text_encoder", "image_encoder", "fusion", "head"):
        moved = [not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith(group)]
        assert all(moved), f"a parameter of {group} did not move"


def test_fusion_model_float32_agrees_with_float64(seed):
    model = _fusion_model(seed)
    ids, features, text_pad, image_pad = _fusion_inputs(seed)
    gold = model(ids, features, text_padding_mask=text_pad, image_padding_mask=image_pad)
    low = model.float()(ids, features.float(), text_padding_mask=text_pad, image_padding_mask=image_pad)
    assert_agrees(low, gold, name="float32 fusion model")
    _assert_sensitive(low, gold, name="float32 fusion model")


def test_masked_mean_is_the_mean_of_the_real_tokens(seed):
    x = random_tensor((2, 5, 3), seed=seed, dtype=torch.float64)
    pad = torch.tensor([[False, False, True, True, True], [False] * 5])
    x[0, 3] = float("inf")  # a non-finite padded slot must not leak in
    expected = torch.stack([x[0, :2].mean(0), x[1].mean(0)])
    assert_agrees(masked_mean(x, pad), expected, name="masked mean")


def test_fusion_model_rejects_bad_inputs(seed):
    model = _fusion_model(seed)
    ids, features, text_pad, image_pad = _fusion_inputs(seed)
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        model(ids.double(), features)
    with pytest.raises(ValueError, match="input_ids must lie in"):
        model(ids + CONFIG.vocab_size, features)
    with pytest.raises(ValueError, match="more than max_text_length"):
        model(torch.zeros(B, 33, dtype=torch.long), features)
    with pytest.raises(ValueError, match=r"image_features must have shape \(B, N, 12\)"):
        model(ids, features[..., :-1])
    with pytest.raises(ValueError, match="image_features must have the batch size of input_ids"):
        model(ids, features[:2])
    with pytest.raises(ValueError, match=r"text_padding_mask must have shape"):
        model(ids, features, text_padding_mask=text_pad[:, 1:])


# --------------------------------------------------------------------------------------------------
# ImageTextClassifier
# --------------------------------------------------------------------------------------------------


def _classifier(seed, vision=VISION):
    torch.manual_seed(seed)
    return randomize_parameters(ImageTextClassifier(CONFIG, vision).double(), seed)


def _classifier_inputs(seed):
    h, w = VISION.image_size
    pixels = random_tensor((B, 3, h, w), seed=seed, dtype=torch.float64)
    ids = torch.randint(0, CONFIG.vocab_size, (B, NT), generator=torch.Generator().manual_seed(seed))
    return pixels, ids, _padding(B, NT, seed + 2)


def _shuffle_patches(pixels: torch.Tensor, patch: int, perm: torch.Tensor) -> torch.Tensor:
    """Move the image's patch blocks around (row-major patch order), pixels inside a patch untouched."""
    b, c, h, w = pixels.shape
    rows, cols = h // patch, w // patch
    blocks = pixels.reshape(b, c, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5)  # (B, r, c, C, p, p)
    blocks = blocks.reshape(b, rows * cols, c, patch, patch)[:, perm]
    blocks = blocks.reshape(b, rows, cols, c, patch, patch).permute(0, 3, 1, 4, 2, 5)  # (B, C, r, p, c, p)
    return blocks.reshape(b, c, h, w)


def test_classifier_is_invariant_to_patch_order_and_token_order(seed):
    model = _classifier(seed)
    pixels, ids, pad = _classifier_inputs(seed)
    gold = model(pixels, ids, text_padding_mask=pad)
    assert gold.shape == (B, CONFIG.num_outputs)
    patch_perm, token_perm = _permutation(VISION.num_patches, seed), _permutation(NT, seed + 1)
    shuffled = _shuffle_patches(pixels, 4, patch_perm)
    assert not torch.equal(shuffled, pixels)
    changed = model(shuffled, ids[:, token_perm], text_padding_mask=pad[:, token_perm])
    assert_agrees(changed, gold, name="classifier, patches and tokens permuted")


def test_classifier_patch_positions_break_the_symmetry_when_enabled(seed):
    model = _classifier(seed, dataclasses.replace(VISION, use_position_embeddings=True))
    pixels, ids, _ = _classifier_inputs(seed)
    shuffled = _shuffle_patches(pixels, 4, torch.arange(VISION.num_patches).roll(1))
    # float64 rounding moves outputs by ~1e-15; a real effect of the positions is far above 1e-10
    assert (model(shuffled, ids) - model(pixels, ids)).abs().max() > 1e-10


def test_classifier_ignores_padded_tokens(seed):
    model = _classifier(seed)
    pixels, ids, pad = _classifier_inputs(seed)
    pad[1, 3:] = True
    other_ids = torch.where(pad, (ids + 3) % CONFIG.vocab_size, ids)
    assert_agrees(model(pixels, other_ids, text_padding_mask=pad), model(pixels, ids, text_padding_mask=pad),
                  name="classifier, padded tokens changed")


def test_classifier_loss_prediction_and_gradient_flow(seed):
    model = _classifier(seed)
    pixels, ids, pad = _classifier_inputs(seed)
    labels = torch.randint(0, CONFIG.num_outputs, (B,), generator=torch.Generator().manual_seed(seed))
    pixels.requires_grad_()
    loss = model.loss(pixels, ids, labels, text_padding_mask=pad)
    logits = model(pixels, ids, text_padding_mask=pad)
    expected = -(logits - logits.logsumexp(-1, keepdim=True)).gather(1, labels[:, None]).mean()
    assert_agrees(loss, expected, name="cross-entropy")
    classes, probabilities = model.predict(pixels, ids, text_padding_mask=pad)
    assert torch.equal(classes, logits.argmax(-1))
    assert_agrees(probabilities.sum(-1), torch.ones(B, dtype=torch.float64), name="probabilities sum to 1")
    loss.backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum(dim=(1, 2, 3)).gt(0).all()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_classifier_float32_agrees_with_float64(seed):
    model = _classifier(seed)
    pixels, ids, pad = _classifier_inputs(seed)
    gold = model(pixels, ids, text_padding_mask=pad)
    low = model.float()(pixels.float(), ids, text_padding_mask=pad)
    assert_agrees(low, gold, name="float32 classifier")
    _assert_sensitive(low, gold, name="float32 classifier")


def test_classifier_rejects_bad_inputs(seed):
    model = _classifier(seed)
    pixels, ids, pad = _classifier_inputs(seed)
    with pytest.raises(ValueError, match="labels must lie in"):
        model.loss(pixels, ids, torch.full((B,), CONFIG.num_outputs))
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\) = \(3,\)"):
        model.loss(pixels, ids, torch.zeros(B, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        model.loss(pixels, ids, torch.zeros(B))
    with pytest.raises(ValueError, match="pixel_values must have 3 channels"):
        model(pixels[:, :1], ids)
    with pytest.raises(ValueError, match=r"vision.backend \('sdpa'\) must equal config.backend"):
        ImageTextClassifier(CONFIG, dataclasses.replace(VISION, backend="sdpa"))


# --------------------------------------------------------------------------------------------------
# The whole models on the kernel (sections 14 and 24): backend="triton" in every attention
# --------------------------------------------------------------------------------------------------


def test_classifier_with_the_triton_kernel_agrees_with_float64(seed):
    """ViT, text and region encoders and the co-attention fusion, every attention on kernels/attention.py (the
    CPU interpreter in CI), float32 against the float64 reference: logits and the gradient reaching the pixels.
    Its parts' oracles are the tests above (and suites/reference/test_vit.py); this runs the models themselves,
    the classifier and the fusion model inside it, on the kernel."""
    from reference.attention import MultiHeadAttention

    model = _classifier(seed)
    pixels, ids, pad = _classifier_inputs(seed)
    weights = random_tensor((B, CONFIG.num_outputs), seed=seed + 6, dtype=torch.float64)

    def run(net, dtype):
        x = pixels.to(dtype).requires_grad_()
        logits = net(x, ids, text_padding_mask=pad)
        return logits, torch.autograd.grad((logits * weights.to(dtype)).sum(), x)[0]

    gold_logits, gold_grad = run(model, torch.float64)
    kernel_model = copy.deepcopy(model).float()
    layers = [m for m in kernel_model.modules() if isinstance(m, MultiHeadAttention)]
    assert len(layers) == 3 + 2 * 2 * CONFIG.num_fusion_layers  # ViT, text, image encoders + co-attention
    for layer in layers:
        layer.backend = "triton"
    logits, grad = run(kernel_model, torch.float32)
    assert_agrees(logits, gold_logits, name="classifier logits, backend=triton")
    assert_agrees(grad, gold_grad, gradient=True, name="d pixel_values, backend=triton")
    _assert_sensitive(logits, gold_logits, name="classifier logits, backend=triton")
