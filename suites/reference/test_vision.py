"""reference/vision.py against transformers.ResNetModel (tiny configs, weights copied by name).

Batch norm is the easy place to be wrong unnoticed: freshly initialised statistics (mean 0, var 1,
weight 1, bias 0) make it the identity, so every BN here gets random weight, bias, running mean and
running variance before comparing, in eval mode (running statistics) and in train mode (batch
statistics). Images are odd-sized so every stride-2 layer rounds.
"""

import pytest
import torch
import transformers

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.vision import ConvBackbone, ConvBackboneConfig

DTYPES = [torch.float64, torch.float32]

CONFIGS = {
    "basic": dict(block="basic", stem_channels=8, hidden_sizes=(8, 12, 16), depths=(2, 1, 2)),
    "basic-downsample-first": dict(block="basic", stem_channels=6, hidden_sizes=(10, 12), depths=(1, 2),
                                   downsample_in_first_stage=True),
    "bottleneck": dict(block="bottleneck", stem_channels=8, hidden_sizes=(16, 24, 32), depths=(2, 1, 1)),
    "bottleneck-stride-in-1x1": dict(block="bottleneck", stem_channels=8, hidden_sizes=(16, 32), depths=(1, 2),
                                     downsample_in_bottleneck=True),
}


def _hf_name(ours: str) -> str:
    """Our parameter name -> transformers.ResNetModel's."""
    name = ours.replace("stem.", "embedder.embedder.", 1).replace("stages.", "encoder.stages.", 1)
    parts = name.split(".")
    if parts[0] == "encoder":  # encoder.stages.{s}.{b}.(convs.{i}|shortcut).(conv|norm).*
        parts.insert(3, "layers")
        if parts[5] == "convs":
            parts[5] = "layer"
    return ".".join(parts).replace(".conv.", ".convolution.").replace(".norm.", ".normalization.")


def _pair(seed, variant, dtype=torch.float64):
    options = CONFIGS[variant]
    config = ConvBackboneConfig(num_channels=3, projection_dim=20, **options)
    hf_config = transformers.ResNetConfig(
        num_channels=3, embedding_size=config.stem_channels, hidden_sizes=list(config.hidden_sizes),
        depths=list(config.depths), layer_type=config.block, hidden_act="relu",
        downsample_in_first_stage=config.downsample_in_first_stage,
        downsample_in_bottleneck=config.downsample_in_bottleneck)
    torch.manual_seed(seed)
    theirs = transformers.ResNetModel(hf_config).to(dtype)
    ours = ConvBackbone(config).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in theirs.modules():  # BN away from the identity: random affine and running statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(1 + 0.3 * torch.randn(c, generator=generator, dtype=torch.float64))
                module.bias.copy_(0.3 * torch.randn(c, generator=generator, dtype=torch.float64))
                module.running_mean.copy_(0.5 * torch.randn(c, generator=generator, dtype=torch.float64))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator, dtype=torch.float64))
        their_state = theirs.state_dict()
        our_state = ours.state_dict()
        mapped = {name: _hf_name(name) for name in our_state if not name.startswith("projection.")}
        assert set(mapped.values()) == set(their_state), "the name mapping must cover every tensor exactly once"
        ours.load_state_dict({**{n: their_state[h] for n, h in mapped.items()},
                              **{n: t for n, t in our_state.items() if n.startswith("projection.")}})
    return ours, theirs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", list(CONFIGS))
def test_matches_transformers_resnet_in_eval_mode(seed, dtype, variant):
    ours, theirs = _pair(seed, variant)
    ours.eval()
    theirs.eval()
    pixels = random_tensor((2, 3, 37, 29), seed=seed, dtype=torch.float64).requires_grad_()  # odd sizes
    gold_map = ours.feature_map(pixels)
    gold_grad, = torch.autograd.grad(gold_map.square().sum(), pixels)
    gold_embedding = ours(pixels.detach())

    ours_low = ours.to(dtype)
    low_pixels = pixels.detach().to(dtype).requires_grad_()
    baseline_map = ours_low.feature_map(low_pixels)
    baseline_grad, = torch.autograd.grad(baseline_map.square().sum(), low_pixels)
    baseline_embedding = ours_low(low_pixels.detach())

    theirs = theirs.to(dtype)
    cand_pixels = pixels.detach().to(dtype).requires_grad_()
    out = theirs(pixel_values=cand_pixels)
    cand_grad, = torch.autograd.grad(out.last_hidden_state.square().sum(), cand_pixels)
    projection = ours_low.projection  # ours; its input, the pooled features, comes from transformers
    cand_embedding = projection(out.pooler_output.flatten(1))

    assert_agrees(out.last_hidden_state.detach(), gold_map.detach(), baseline_map.detach(), name="feature map")
    assert_agrees(out.pooler_output.flatten(1).detach(), gold_map.mean((2, 3)).detach(),
                  baseline_map.mean((2, 3)).detach(), name="pooled")
    assert_agrees(cand_embedding.detach(), gold_embedding.detach(), baseline_embedding.detach(), name="embedding")
    assert_agrees(cand_grad, gold_grad, baseline_grad, gradient=True, name="d/d pixels")


def test_matches_transformers_resnet_in_train_mode(seed):
    ours, theirs = _pair(seed, "bottleneck")
    ours.train()
    theirs.train()
    pixels = random_tensor((3, 3, 33, 40), seed=seed, dtype=torch.float64)
    assert_agrees(theirs(pixel_values=pixels).last_hidden_state.detach(), ours.feature_map(pixels).detach(),
                  name="feature map, batch statistics")
    for name, buffer in ours.state_dict().items():  # both updated their running statistics the same way
        if "running" in name:
            assert_agrees(theirs.state_dict()[_hf_name(name)], buffer, name=name)


def test_projection_and_shapes():
    config = ConvBackboneConfig(hidden_sizes=(8, 16, 24), depths=(1, 1, 1), projection_dim=12, stem_channels=8)
    net = ConvBackbone(config).double().eval()
    pixels = random_tensor((4, 3, 64, 48), seed=3, dtype=torch.float64)
    # 64x48 -> stem /2 -> 32x24 -> pool /2 -> 16x12 -> stage 1 (stride 1) -> stage 2 /2 8x6 -> stage 3 /2 4x3
    assert net.feature_map(pixels).shape == (4, 24, 4, 3)
    pooled = net.pooled(pixels)
    assert_agrees(net(pixels), pooled @ net.projection.weight.T + net.projection.bias, name="projection")
    unprojected = ConvBackbone(ConvBackboneConfig(projection_dim=None)).eval()
    assert unprojected(torch.randn(1, 3, 32, 32)).shape == (1, 64)


def test_bad_inputs_raise_naming_the_argument():
    net = ConvBackbone(ConvBackboneConfig())
    cases = [
        (lambda: ConvBackboneConfig(block="dense"), ValueError, "block must be 'basic' or 'bottleneck'"),
        (lambda: ConvBackboneConfig(hidden_sizes=(8, 16), depths=(1,)), ValueError, "equal length"),
        (lambda: ConvBackboneConfig(depths=(1, 0, 1)), ValueError, "depths must be positive"),
        (lambda: ConvBackboneConfig(block="bottleneck", hidden_sizes=(16, 30, 64)), ValueError,
         "multiples of reduction=4"),
        (lambda: ConvBackboneConfig(projection_dim=0), ValueError, "projection_dim must be"),
        (lambda: ConvBackboneConfig(stem_channels=0), ValueError, "stem_channels must be"),
        (lambda: net(torch.randn(2, 1, 32, 32)), ValueError, "pixels must have shape \\(B, num_channels=3, H, W\\)"),
        (lambda: net(torch.randn(3, 32, 32)), ValueError, "pixels must have shape"),
        (lambda: net(torch.ones(1, 3, 32, 32, dtype=torch.uint8)), TypeError, "pixels must be a floating-point"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
