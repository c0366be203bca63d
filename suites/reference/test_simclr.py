"""reference/simclr.py: the SimCLR pipeline (two views, encoder, projection head, NT-Xent).

* Oracle for the objective: pytorch-metric-learning's ``NTXentLoss`` on the model's projections of the two views
  (embeddings [z_1; z_2], labels [0..N-1; 0..N-1]), forward and gradients into the head and the encoder.
  The encoder itself is :class:`reference.vision.ConvBackbone`, checked against transformers' ResNet in
  test_vision.py.
* The augmentation: reproducible from the generator, each step checked where its result is known exactly
  (identity crop, flip, grayscale's luma, a blur of a constant image), and the views stay in [0, 1].
"""

import copy

import pytest
import torch
from pytorch_metric_learning.losses import NTXentLoss

from fusebench.agreement import assert_agrees
from reference.simclr import AugmentationConfig, SimCLR, augment, two_views
from reference.vision import ConvBackbone, ConvBackboneConfig

NOTHING = dict(flip_probability=0, jitter_probability=0, grayscale_probability=0, blur_probability=0)


def _images(seed, n=5, size=(3, 20, 24)):
    return torch.rand((n, *size), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _simclr(seed):
    torch.manual_seed(seed)
    encoder = ConvBackbone(ConvBackboneConfig(stem_channels=8, hidden_sizes=(8, 12), depths=(1, 1),
                                              projection_dim=None))
    return SimCLR(encoder, feature_dim=12, hidden_dim=16, projection_dim=10, temperature=0.3).double().eval()


def pml_nt_xent(z1, z2, temperature):
    """pytorch-metric-learning's NT-Xent: a row's positive is the other row with its label."""
    n = z1.shape[0]
    labels = torch.cat([torch.arange(n), torch.arange(n)])
    return NTXentLoss(temperature=temperature)(torch.cat([z1, z2]), labels)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_simclr_loss_matches_pytorch_metric_learning(seed, dtype):
    model = _simclr(seed)
    view_1, view_2 = two_views(_images(seed), torch.Generator().manual_seed(seed))

    def grads(m, loss):
        return torch.autograd.grad(loss, [m.head.layers[0].weight, m.encoder.stem.conv.weight])

    gold = model.loss(view_1, view_2)
    gold_grads = grads(model, gold)
    low = copy.deepcopy(model).to(dtype)
    baseline = low.loss(view_1.to(dtype), view_2.to(dtype))
    baseline_grads = grads(low, baseline)
    candidate_model = copy.deepcopy(model).to(dtype)
    candidate = pml_nt_xent(candidate_model(view_1.to(dtype)), candidate_model(view_2.to(dtype)), 0.3)
    candidate_grads = grads(candidate_model, candidate)

    assert_agrees(candidate.detach(), gold.detach(), baseline.detach(), name="pytorch-metric-learning NTXentLoss")
    for name, c, g, b in zip(("head W_1", "encoder stem conv"), candidate_grads, gold_grads, baseline_grads,
                             strict=True):
        assert_agrees(c, g, b, gradient=True, name=f"d loss / d {name}")


def test_representation_is_the_encoder_output_and_projection_the_head(seed):
    model = _simclr(seed)
    images = _images(seed)
    h = model.represent(images)
    assert h.shape == (5, 12)
    first, second = model.head.layers[0], model.head.layers[2]
    assert_agrees(model(images), torch.relu(h @ first.weight.T + first.bias) @ second.weight.T + second.bias,
                  name="g(h) = W_2 ReLU(W_1 h)")


def test_views_are_reproducible_different_and_in_range(seed):
    images = _images(seed)
    view_1, view_2 = two_views(images, torch.Generator().manual_seed(seed))
    again_1, again_2 = two_views(images, torch.Generator().manual_seed(seed))
    assert torch.equal(view_1, again_1) and torch.equal(view_2, again_2)
    assert view_1.shape == images.shape and not torch.equal(view_1, view_2)
    # In [0, 1] up to the blur's rounding: the last step, a convex combination (two passes of a 3-tap kernel that
    # sums to 1 at these sizes), rounds each pass by up to 3 unit roundoffs, so a white pixel can come out 1 + 4e-16.
    # The jitter steps clamp; nonnegative terms with positive weights never round below 0.
    assert view_1.min() >= 0 and view_1.max() <= 1 + 2 * 3 * torch.finfo(torch.float64).eps / 2


def test_each_augmentation_step_where_its_result_is_known(seed):
    images = _images(seed, size=(3, 16, 16))
    generator = torch.Generator().manual_seed(seed)
    whole = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))  # the crop is the whole (square) image
    assert torch.equal(augment(images, generator, AugmentationConfig(**whole, **NOTHING)), images)
    flipped = augment(images, generator, AugmentationConfig(**whole, **(NOTHING | dict(flip_probability=1))))
    assert torch.equal(flipped, images.flip(-1))
    gray = augment(images, generator, AugmentationConfig(**whole, **(NOTHING | dict(grayscale_probability=1))))
    # Pixel (0, 0) of image 0 by hand: 0.299 R + 0.587 G + 0.114 B, in all three channels.
    r, g, b = images[0, :, 0, 0].tolist()
    expected = torch.full((3,), 0.299 * r + 0.587 * g + 0.114 * b, dtype=torch.float64)
    assert_agrees(gray[0, :, 0, 0], expected, name="grayscale luma")
    constant = torch.full((2, 3, 16, 16), 0.25, dtype=torch.float64)  # blur's weights sum to 1
    blurred = augment(constant, generator, AugmentationConfig(**whole, **(NOTHING | dict(blur_probability=1))))
    assert_agrees(blurred, constant, name="blurred constant image")


def test_bad_inputs_raise_naming_the_argument(seed):
    generator = torch.Generator().manual_seed(seed)
    cases = [
        (lambda: augment(torch.rand(2, 1, 8, 8), generator), ValueError, r"images must have shape \(N, 3, H, W\)"),
        (lambda: augment(torch.ones(2, 3, 8, 8, dtype=torch.uint8), generator), TypeError, "floating-point"),
        (lambda: augment(torch.rand(2, 3, 8, 8), 3), TypeError, "generator must be a torch.Generator"),
        (lambda: AugmentationConfig(flip_probability=2), ValueError, "flip_probability must be a probability"),
        (lambda: AugmentationConfig(crop_scale=(0.5, 2.0)), ValueError, "crop_scale must lie in"),
        (lambda: AugmentationConfig(jitter_strength=1.5), ValueError, "jitter_strength must be"),
        (lambda: SimCLR(torch.nn.Identity(), 4, temperature=0), ValueError, "temperature must be"),
        (lambda: _simclr(seed).loss(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)), ValueError,
         "view_1 and view_2 must have one shape"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
