"""Multimodal models with backend="triton": fusion (section 14), image+text classifier (24), CLIP (7), ITM (8),
VisualBERT pre-training (6).

reference/fusion.py's MultimodalFusionModel and ImageTextClassifier run every attention (text and image
self-attention, both directions of co-attention, and the ViT's for section 24) through the seam, as do both
towers of reference/clip.py's ClipModel (the text tower causal and padded) and reference/matching.py's
ImageTextMatchingModel (ViT, text self-attention, text-to-patch cross-attention). Here each module's copy with
every attention layer switched to the Triton kernel is checked through the agreement policy: gold = the
reference module in float64, baseline = the reference module in the dtype under test, candidate = the triton
copy in that dtype; outputs and the gradients of the inputs and of one weight. The modules' oracles (torch.nn
layers; transformers' ViT, CLIPModel and BlipForImageTextRetrieval) are in suites/reference/; this file checks
that the kernel computes the same module.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from correctness.twins import (
    assert_recorded_calls_agree,
    low_precision_baselines,
    recorded_attention_calls,
    with_backend,
)
from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor, randomize_parameters
from reference.clip import ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig
from reference.fusion import FusionConfig, ImageTextClassifier, MultimodalFusionModel
from reference.matching import FusionTextConfig, ImageTextMatchingConfig, ImageTextMatchingModel
from reference.vit import ViTConfig
from reference.vlm import VisualBertConfig, VisualBertForPreTraining

DTYPES = [pytest.param(dtype, id=str(dtype).removeprefix("torch.")) for dtype in (torch.float32, torch.bfloat16)]
VOCAB = 37


def _config(**overrides) -> FusionConfig:
    # Head dims 4 (text) and 6 (image): both padded to the kernel's 16-wide tile; streams of unequal widths.
    return FusionConfig(**{**dict(vocab_size=VOCAB, max_text_length=32, text_dim=16, image_dim=24, num_heads=4,
                                  ffn_ratio=2, num_text_layers=1, num_image_layers=1, num_fusion_layers=1,
                                  image_feature_dim=12, num_outputs=3), **overrides})


def _padding(batch: int, length: int, seed: int) -> torch.Tensor:
    """(B, N) bool, True = padding: each row keeps a random prefix of at least one token; row 0 keeps all."""
    lengths = torch.randint(1, length + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    lengths[0] = length
    return torch.arange(length)[None, :] >= lengths[:, None]


def _compare(reference: nn.Module, run, dtype: torch.dtype, what: str) -> None:
    """run(model, dtype) -> (output, gradients...); gold, the baselines and the triton candidate through the policy.

    A whole model is a composite: in bfloat16 its baselines are the eager model and the model around the exact
    attention rounded to bfloat16 (``low_precision_baselines``), since a single eager run's error is one draw of the
    rounding every later layer adds, and the kernel's run is another. That noise hides all but gross kernel errors
    in the model's outputs (an attention output 5% off passes them in bfloat16), so every kernel call the model made
    is also judged on its own, at op level, on the inputs and upstream gradient the model gave it."""
    gold = run(reference, torch.float64)
    baselines = low_precision_baselines(reference, run, dtype)
    with recorded_attention_calls("triton") as calls:
        candidate = run(with_backend(reference, "triton", dtype), dtype)
    names = ("logits", *(f"d {name}" for name in what))
    for i, name in enumerate(names):
        assert_agrees(candidate[i], gold[i], [baseline[i] for baseline in baselines], gradient=i > 0,
                      name=f"{name} backend=triton")
    assert_recorded_calls_agree(calls, name="in the model")


def _with_gradients(logits, weights, *inputs):
    """``(logits, d loss / d input for each input)`` with the loss ``sum(logits * weights)``."""
    return (logits, *torch.autograd.grad((logits * weights.to(logits.dtype)).sum(), inputs))


@pytest.mark.parametrize("dtype", DTYPES)
def test_multimodal_fusion_model_with_triton_matches_the_reference(seed, dtype):
    """Section 14: 11 text tokens and 7 regions (neither a multiple of the block), padding in both streams."""
    reference = randomize_parameters(MultimodalFusionModel(_config()).double(), seed)
    input_ids = torch.randint(0, VOCAB, (3, 11), generator=torch.Generator().manual_seed(seed))
    features = random_tensor((3, 7, 12), seed=seed + 1, dtype=torch.float64)
    text_pad, image_pad = _padding(3, 11, seed + 2), _padding(3, 7, seed + 3)
    weights = random_tensor((3, 3), seed=seed + 4, dtype=torch.float64)

    def run(model, cast):
        regions = features.to(cast).requires_grad_()
        logits = model(input_ids, regions, text_padding_mask=text_pad, image_padding_mask=image_pad)  # (B, 3)
        return _with_gradients(logits, weights, regions, model.text_encoder.encoder.layers[0].self_attn.q_proj.weight)

    _compare(reference, run, dtype, what=("image_features", "text query weight"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_image_text_classifier_with_triton_matches_the_reference(seed, dtype):
    """Section 24: a 12x8 image in 4x4 patches (6 patches + [CLS] = 7 tokens) and 9 text tokens with padding."""
    vision = ViTConfig(image_size=(12, 8), patch_size=4, num_channels=3, hidden_size=16, num_layers=1, num_heads=4,
                       intermediate_size=24, layer_norm_eps=1e-6)
    reference = randomize_parameters(ImageTextClassifier(_config(), vision).double(), seed)
    pixels = random_tensor((3, 3, 12, 8), seed=seed + 1, dtype=torch.float64)
    input_ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(seed))
    text_pad = _padding(3, 9, seed + 2)
    weights = random_tensor((3, 3), seed=seed + 4, dtype=torch.float64)

    def run(model, cast):
        image = pixels.to(cast).requires_grad_()
        logits = model(image, input_ids, text_padding_mask=text_pad)  # (B, num_classes)
        return _with_gradients(logits, weights, image, model.vision.encoder.layers[0].self_attn.q_proj.weight)

    _compare(reference, run, dtype, what=("pixel_values", "ViT query weight"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_model_with_triton_matches_the_reference(seed, dtype):
    """Section 7: a batch of 6 captions of 7 tokens (causal, padded after the eos) and 6 images of 9 patches + [CLS].

    Six pairs, not three: the logits are a 6 x 6 matrix whose errors are little more than their final rounding,
    so the k-rule's maxima need more than 9 elements to measure the two runs' error levels (see ``_compare``)."""
    eos = VOCAB - 1
    batch = 6
    config = ClipConfig(ClipTextConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=24, max_position_embeddings=8, eos_token_id=eos),
                        ClipVisionConfig(image_size=12, patch_size=4, hidden_size=24, num_hidden_layers=1,
                                         num_attention_heads=4, intermediate_size=36),
                        projection_dim=12)
    reference = randomize_parameters(ClipModel(config).double(), seed)
    with torch.no_grad():
        reference.logit_scale.fill_(2.0)  # a scale of e^2 = 7.4: logits of a few units, softmax far from one-hot
    input_ids = torch.randint(0, eos, (batch, 7), generator=torch.Generator().manual_seed(seed))
    keep = ~_padding(batch, 6, seed + 2)  # (B, 6) real prefix of at least one token, then the eos, then padding
    lengths = keep.sum(dim=1)
    input_ids[torch.arange(batch), lengths] = eos
    attention_mask = (torch.arange(7)[None, :] <= lengths[:, None]).long()
    pixels = random_tensor((batch, 3, 12, 12), seed=seed + 1, dtype=torch.float64)

    def run(model, cast):
        image = pixels.to(cast).requires_grad_()
        out = model(input_ids, image, attention_mask, return_loss=True)
        query = model.text_model.encoder.layers[0].self_attn.q_proj.weight
        grads = torch.autograd.grad(out.loss, (image, query))
        return (out.logits_per_image, *grads)

    _compare(reference, run, dtype, what=("pixel_values", "text query weight"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_image_text_matching_model_with_triton_matches_the_reference(seed, dtype):
    """Section 8: 9 text tokens (padded) cross-attending to 9 patches + [CLS] of a 12x12 image; ITM logits."""
    config = ImageTextMatchingConfig(FusionTextConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                                                      num_attention_heads=4, intermediate_size=24,
                                                      max_position_embeddings=16),
                                     ViTConfig(image_size=12, patch_size=4, hidden_size=24, num_layers=1,
                                               num_heads=4, intermediate_size=36, layer_norm_eps=1e-5),
                                     embed_dim=12)
    reference = randomize_parameters(ImageTextMatchingModel(config).double(), seed)
    input_ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(seed))
    attention_mask = (~_padding(3, 9, seed + 2)).long()
    pixels = random_tensor((3, 3, 12, 12), seed=seed + 1, dtype=torch.float64)
    weights = random_tensor((3, 2), seed=seed + 4, dtype=torch.float64)

    def run(model, cast):
        image = pixels.to(cast).requires_grad_()
        logits = model.itm_logits(image, input_ids, attention_mask)  # (B, 2)
        return _with_gradients(logits, weights, image, model.text_encoder.layers[0].cross_attn.k_proj.weight)

    _compare(reference, run, dtype, what=("pixel_values", "cross-attention key weight"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_visualbert_pretraining_with_triton_matches_the_reference(seed, dtype):
    """Section 6: 9 text tokens (padded) and 5 regions in one stream; MLM over the text and sentence-image logits."""
    config = VisualBertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                              intermediate_size=24, max_position_embeddings=16, visual_embedding_dim=10)
    reference = randomize_parameters(VisualBertForPreTraining(config).double(), seed)
    input_ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(seed))
    attention_mask = (~_padding(3, 9, seed + 2)).long()  # 1 = a real token
    regions = random_tensor((3, 5, 10), seed=seed + 1, dtype=torch.float64)
    weights = random_tensor((3, 2), seed=seed + 4, dtype=torch.float64)

    def run(model, cast):
        visual = regions.to(cast).requires_grad_()
        out = model(input_ids, visual, attention_mask=attention_mask)
        text_logits = out.prediction_logits[:, :9] * attention_mask[..., None]  # (B, Nt, V): padded rows are free
        query = model.visual_bert.encoder.layers[0].self_attn.q_proj.weight
        objective = text_logits.sum() + (out.seq_relationship_logits * weights.to(cast)).sum()
        grads = torch.autograd.grad(objective, (visual, query))
        return (torch.cat([text_logits.flatten(), out.seq_relationship_logits.flatten()]), *grads)

    _compare(reference, run, dtype, what=("visual_embeds", "query weight"))
