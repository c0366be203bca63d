"""reference/vit.py against transformers.ViTModel (tiny config, weights copied).

gold = our ViT in float64; candidate = transformers' ViTModel in the dtype under test; baseline = our ViT in
that dtype. transformers' "eager" attention computes its softmax in float32 even for a float64 model (we
measured ~2e-8 against gold), so the float64 candidate runs transformers' "sdpa" attention (torch's math
kernel, float64 throughout); float32 runs both implementations.
"""

import pytest
import torch
import transformers

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor, randomize_parameters
from reference.vit import PatchEmbedding, VisionTransformer, ViTConfig

HIDDEN, HEADS, FFN, LAYERS = 32, 4, 48, 2

GEOMETRIES = [
    # (image_size, patch_size): tokens = patches + 1
    (20, 4),  # 5 x 5 patches + [CLS] = 26 tokens
    ((12, 28), (4, 4)),  # non-square image: 3 x 7 patches + 1 = 22 tokens
    (14, (7, 2)),  # non-square patches: 2 x 7 patches + 1 = 15 tokens
    (56, 4),  # 14 x 14 patches + 1 = 197 tokens, ViT-B/16's count at 224 x 224
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def _models(seed, image_size, patch_size, implementation):
    torch.manual_seed(seed)
    config = transformers.ViTConfig(image_size=list(_pair(image_size)), patch_size=list(_pair(patch_size)),
                                    num_channels=3, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                    num_attention_heads=HEADS, intermediate_size=FFN, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0, attn_implementation=implementation)
    # transformers initializes LayerNorms to (1, 0) and cls to zeros: randomize all
    theirs = randomize_parameters(transformers.ViTModel(config).double().eval(), seed)
    ours = VisionTransformer(ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=3,
                                       hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                                       intermediate_size=FFN)).double()
    return ours.copy_from_transformers(theirs), theirs


@pytest.mark.parametrize(("image_size", "patch_size"), GEOMETRIES, ids=lambda g: str(g).replace(" ", ""))
@pytest.mark.parametrize(("dtype", "implementation"),
                         [(torch.float64, "sdpa"), (torch.float32, "eager"), (torch.float32, "sdpa")])
def test_vit_matches_transformers_vit_model(seed, image_size, patch_size, dtype, implementation):
    ours, theirs = _models(seed, image_size, patch_size, implementation)
    h, w = _pair(image_size)
    pixels = random_tensor((2, 3, h, w), seed=seed, dtype=torch.float64)
    gold = ours(pixels)
    ours_low, theirs_low = ours.to(dtype), theirs.to(dtype)
    baseline = ours_low(pixels.to(dtype))
    with torch.no_grad():
        candidate = theirs_low(pixel_values=pixels.to(dtype))
    assert gold.last_hidden_state.shape == (2, ours.config.num_patches + 1, HIDDEN)
    assert_agrees(candidate.last_hidden_state, gold.last_hidden_state, baseline.last_hidden_state,
                  name=f"ViTModel last_hidden_state ({implementation})")
    assert_agrees(candidate.pooler_output, gold.pooler_output, baseline.pooler_output,
                  name=f"ViTModel pooler_output ({implementation})")


def test_vit_gradients_match_transformers(seed):
    ours, theirs = _models(seed, 20, 4, "sdpa")
    pixels = random_tensor((2, 3, 20, 20), seed=seed, dtype=torch.float64)
    weights = random_tensor((2, HIDDEN), seed=seed + 1, dtype=torch.float64)
    grads = []
    for model in (ours, theirs):
        x = pixels.clone().requires_grad_()
        pooled = model(x)[1]  # both outputs are (last_hidden_state, pooler_output) tuples
        grads.append(torch.autograd.grad((pooled * weights).sum(), x)[0])
    assert_agrees(grads[1], grads[0], gradient=True, name="d pixel_values")


def test_patch_embedding_is_a_linear_map_of_each_flattened_patch(seed):
    # Independent of the Conv2d: cut the patches by hand, flatten (C, Ph, Pw), multiply by E.
    config = ViTConfig(image_size=(8, 12), patch_size=(4, 3), num_channels=2, hidden_size=HIDDEN, num_layers=1,
                       num_heads=HEADS, intermediate_size=FFN)
    embed = PatchEmbedding(config).double()
    pixels = random_tensor((2, 2, 8, 12), seed=seed, dtype=torch.float64)
    weight = embed.projection.weight.flatten(1)  # (D, C * Ph * Pw)
    expected = torch.stack([
        pixels[:, :, r * 4:(r + 1) * 4, c * 3:(c + 1) * 3].flatten(1) @ weight.T + embed.projection.bias
        for r in range(2) for c in range(4)  # row-major patch order
    ], dim=1)
    assert_agrees(embed(pixels), expected, name="patch embedding")


def test_cls_token_and_positions_enter_the_sequence(seed):
    torch.manual_seed(seed)
    vit = VisionTransformer(ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=HIDDEN, num_layers=1,
                                      num_heads=HEADS, intermediate_size=FFN)).double()
    pixels = random_tensor((1, 3, 8, 8), seed=seed, dtype=torch.float64)
    tokens = vit.embed(pixels)
    assert_agrees(tokens[:, 0], (vit.cls_token + vit.position_embeddings[:, 0])[:, 0], name="[CLS] + E_pos[0]")
    assert_agrees(tokens[:, 1:], vit.patch_embedding(pixels) + vit.position_embeddings[:, 1:], name="patches + E_pos")


def test_backend_reaches_every_attention_layer():
    vit = VisionTransformer(ViTConfig(image_size=8, patch_size=4, hidden_size=HIDDEN, num_layers=2, num_heads=HEADS,
                                      intermediate_size=FFN, backend="sdpa"))
    backends = [m.backend for m in vit.modules() if hasattr(m, "backend")]
    assert backends == ["sdpa", "sdpa"]


def test_sdpa_backend_gives_the_same_vit(seed):
    config = dict(image_size=20, patch_size=4, hidden_size=HIDDEN, num_layers=2, num_heads=HEADS,
                  intermediate_size=FFN)
    reference = VisionTransformer(ViTConfig(**config)).double()
    torch_sdpa = VisionTransformer(ViTConfig(**config, backend="sdpa")).double()
    torch_sdpa.load_state_dict(reference.state_dict())
    pixels = random_tensor((2, 3, 20, 20), seed=seed, dtype=torch.float64)
    assert_agrees(torch_sdpa(pixels).last_hidden_state, reference(pixels).last_hidden_state, name="backend=sdpa")


def test_bad_inputs_are_rejected(seed):
    vit = VisionTransformer(ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=HIDDEN, num_layers=1,
                                      num_heads=HEADS, intermediate_size=FFN))
    with pytest.raises(ValueError, match="pixel_values must have 3 channels"):
        vit(random_tensor((1, 1, 8, 8), seed=seed))
    with pytest.raises(ValueError, match=r"pixel_values' size \(H, W\) = \(8, 10\) must be divisible by patch_size"):
        vit(random_tensor((1, 3, 8, 10), seed=seed))
    with pytest.raises(ValueError, match="must equal image_size"):
        vit(random_tensor((1, 3, 12, 12), seed=seed))
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(B, C, H, W\)"):
        vit(random_tensor((3, 8, 8), seed=seed))
    with pytest.raises(TypeError, match="pixel_values must be a floating-point tensor"):
        vit(torch.randint(0, 255, (1, 3, 8, 8)))
    with pytest.raises(ValueError, match="image_size .* must be divisible by patch_size"):
        ViTConfig(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="hidden_size .* must be divisible by num_heads"):
        ViTConfig(image_size=8, patch_size=4, hidden_size=30, num_heads=4)


def test_copy_rejects_a_mismatched_model(seed):
    _, theirs = _models(seed, 20, 4, "sdpa")
    ours = VisionTransformer(ViTConfig(image_size=20, patch_size=4, hidden_size=HIDDEN, num_layers=1, num_heads=HEADS,
                                       intermediate_size=FFN))
    with pytest.raises(ValueError, match="layers"):
        ours.copy_from_transformers(theirs)
