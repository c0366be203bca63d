"""reference/vgg.py: no library oracle installs here, so VGG is checked by hand and against published facts.

torchvision.models.vgg* and timm's VGG (which needs torchvision) were the intended oracles, but PyPI's
torchvision 0.28 does not import beside the CPU build of torch 2.13 ("operator torchvision::nms does not
exist": its compiled ops do not load), so instead:

* hand-computed cases: a one-convolution VGG on a 4 x 4 image, with and without batch norm, worked out in the
  comments (they fix cross-correlation vs convolution, the padding side, ReLU and the pooling windows);
* the published structure: Table 1's layer counts, and the parameter counts torchvision documents for
  VGG-11/13/16/19 and the _bn variants (counted on the meta device: no memory, no time);
* gradients against finite differences (gradcheck), and float32 against float64 gold through the policy.
"""

import pytest
import torch

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.vgg import VGG, VGGConfig, vgg_config

# torchvision's documented num_params (VGG*_Weights.IMAGENET1K_V1 / *_BN_*), 1000 classes. Consistency: VGG-13
# adds convs 64->64 and 128->128 to VGG-11 (36,928 + 147,584); VGG-16 and VGG-19 each add one conv of 256 and two
# of 512 (590,080 + 2 x 2,359,808); batch norm adds 2 parameters per channel.
PUBLISHED_PARAMETERS = {
    ("vgg11", False): 132_863_336,
    ("vgg13", False): 133_047_848,
    ("vgg16", False): 138_357_544,
    ("vgg19", False): 143_667_240,
    ("vgg13", True): 133_053_736,
    ("vgg16", True): 138_365_992,
}
CONVOLUTIONS = {"vgg11": 8, "vgg13": 10, "vgg16": 13, "vgg19": 16}  # Table 1: weight layers minus the 3 FC


@pytest.mark.parametrize("name, batch_norm", list(PUBLISHED_PARAMETERS))
def test_parameter_counts_and_layers_match_the_published_networks(name, batch_norm):
    with torch.device("meta"):  # shapes only: the full networks hold ~140M parameters
        model = VGG(vgg_config(name, batch_norm=batch_norm))
        logits = model(torch.empty(2, 3, 224, 224))
        features = model.feature_map(torch.empty(2, 3, 224, 224))
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[(name, batch_norm)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == CONVOLUTIONS[name]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 5
    assert features.shape == (2, 512, 7, 7) and logits.shape == (2, 1000)  # 224 / 2^5 = 7


def _one_conv_vgg(batch_norm: bool) -> VGG:
    config = VGGConfig(layers=(1, "M"), num_channels=1, batch_norm=batch_norm, num_classes=None)
    model = VGG(config).double().eval()
    with torch.no_grad():
        conv = model.features[0]
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # the centre
        conv.weight[0, 0, 1, 2] = -1.0  # the right neighbour
        conv.bias.fill_(0.5)
        if batch_norm:
            norm = model.features[1]
            norm.running_mean.fill_(1.5)
            norm.running_var.fill_(4.0 - norm.eps)  # sqrt(var + eps) = 2
            norm.weight.fill_(3.0)
            norm.bias.fill_(-1.0)
    return model


# x[i, j] = 4 i + j on a 4 x 4 image. Cross-correlation with centre 1 and right neighbour -1, bias 0.5:
# y[i, j] = x[i, j] - x[i, j + 1] + 0.5 = -0.5 for j < 3; at j = 3 the right neighbour is zero padding, so
# y[i, 3] = 4 i + 3.5. ReLU keeps column 3 only: (3.5, 7.5, 11.5, 15.5). 2 x 2 max-pool: rows 0-1 give
# (0, 7.5), rows 2-3 give (0, 15.5); their mean (the pooled feature) is 23 / 4 = 5.75.
# (A true convolution, kernel flipped, would give x[i, j] - x[i, j - 1] + 0.5 = 1.5 for j >= 1 instead.)
# With eval-mode batch norm after the convolution (mean 1.5, var + eps = 4, weight 3, bias -1): (y - 1.5) / 2 * 3 - 1
# = 1.5 y - 3.25, so -0.5 -> -4 (ReLU: 0) and 4 i + 3.5 -> 6 i + 2 = (2, 8, 14, 20) in column 3.
# Max-pool: (0, 8) and (0, 20); mean 28 / 4 = 7.
@pytest.mark.parametrize(("batch_norm", "feature_map", "pooled"), [
    (False, [[0.0, 7.5], [0.0, 15.5]], 5.75),
    (True, [[0.0, 8.0], [0.0, 20.0]], 7.0),
], ids=["plain", "batch-norm"])
def test_one_convolution_worked_out_by_hand(batch_norm, feature_map, pooled):
    model = _one_conv_vgg(batch_norm=batch_norm)
    pixels = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)
    assert_agrees(model.feature_map(pixels), torch.tensor([[feature_map]], dtype=torch.float64),
                  name="hand case feature map")
    assert_agrees(model(pixels), torch.tensor([[pooled]], dtype=torch.float64), name="hand case pooled")


def test_classifier_worked_out_by_hand():
    # The image and convolution of the first hand case, then the classifier with width 1: the 7 x 7 adaptive
    # pool becomes 1 x 1 here, the mean of (0, 7.5, 0, 15.5) = 5.75. FC 1 (w 1, b -10): -4.25, ReLU -> 0;
    # FC 2 (w -1, b -3): -3, ReLU -> 0; FC 3 (w 1, b 1): 1. Without the first ReLU FC 2 would see -4.25 and
    # give 1.25 (output 2.25); without the second, the output would be -3 + 1 = -2.
    config = VGGConfig(layers=(1, "M"), num_channels=1, num_classes=1, classifier_width=1, pool_size=1, dropout=0.0)
    model = VGG(config).double().eval()
    with torch.no_grad():
        model.features.load_state_dict(_one_conv_vgg(batch_norm=False).features.state_dict())
        for layer, (w, b) in zip((model.classifier[0], model.classifier[3], model.classifier[6]),
                                 ((1.0, -10.0), (-1.0, -3.0), (1.0, 1.0)), strict=True):
            layer.weight.fill_(w)
            layer.bias.fill_(b)
    pixels = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)
    assert_agrees(model(pixels), torch.tensor([[1.0]], dtype=torch.float64), name="hand case classifier")


def _tiny(seed, **overrides):
    torch.manual_seed(seed)
    options = dict(layers=(4, "M", 6, 6, "M", 8), batch_norm=True, num_classes=5, classifier_width=12, pool_size=2,
                   dropout=0.0)
    model = VGG(VGGConfig(**(options | overrides))).double().eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # batch norm away from the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.3 * torch.randn(m.num_features, generator=generator, dtype=torch.float64))
                m.bias.copy_(0.3 * torch.randn(m.num_features, generator=generator, dtype=torch.float64))
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=generator, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator, dtype=torch.float64))
    return model


def test_gradients_match_finite_differences(seed):
    model = _tiny(seed)
    pixels = random_tensor((2, 3, 9, 11), seed=seed, dtype=torch.float64).requires_grad_()  # odd: pools round down
    assert torch.autograd.gradcheck(model, (pixels,), fast_mode=True)


def test_float32_agrees_with_float64_gold(seed):
    model = _tiny(seed)
    pixels = random_tensor((3, 3, 13, 10), seed=seed, dtype=torch.float64).requires_grad_()
    gold = model(pixels)
    gold_grad, = torch.autograd.grad(gold.square().sum(), pixels)
    low = model.float()
    low_pixels = pixels.detach().float().requires_grad_()
    out = low(low_pixels)
    low_grad, = torch.autograd.grad(out.square().sum(), low_pixels)
    assert_agrees(out.detach(), gold.detach(), name="VGG logits in float32")  # element-wise rule, no baseline
    assert_agrees(low_grad, gold_grad, gradient=True, name="VGG d/d pixels in float32")


def test_backbone_head_is_the_projected_global_average(seed):
    model = _tiny(seed, num_classes=None, projection_dim=7)
    pixels = random_tensor((2, 3, 12, 12), seed=seed, dtype=torch.float64)
    pooled = model.feature_map(pixels).mean(dim=(2, 3))
    assert pooled.shape == (2, 8)
    assert_agrees(model(pixels), pooled @ model.projection.weight.T + model.projection.bias, name="projection")


def test_bad_inputs_raise_naming_the_argument():
    model = VGG(VGGConfig(layers=(4, "M", 8, "M"), num_classes=None))
    cases = [
        (lambda: VGGConfig(layers=("M",)), ValueError, "at least one convolution width"),
        (lambda: VGGConfig(layers=(4, "X")), ValueError, "positive widths or 'M'"),
        (lambda: VGGConfig(num_classes=0), ValueError, "num_classes must be"),
        (lambda: VGGConfig(projection_dim=8), ValueError, "projection_dim is for the backbone"),
        (lambda: VGGConfig(dropout=1.0), ValueError, "dropout must be"),
        (lambda: vgg_config("vgg15"), ValueError, "name must be one of"),
        (lambda: model(torch.randn(1, 1, 8, 8)), ValueError, r"pixels must have shape \(B, num_channels=3, H, W\)"),
        (lambda: model(torch.ones(1, 3, 8, 8, dtype=torch.long)), TypeError, "floating-point"),
        (lambda: model(torch.randn(1, 3, 3, 8)), ValueError, "at least 2\\^2 = 4"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
