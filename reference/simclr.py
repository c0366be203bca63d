"""SimCLR: contrastive self-supervised learning from two augmented views of each image (seed section 28).

Chen, Kornblith, Norouzi and Hinton 2020, "A Simple Framework for Contrastive Learning of Visual
Representations". One training step (Algorithm 1):

    x -> two random augmentations t, t'  ->  x_1 = t(x), x_2 = t'(x)                  (N, C, H, W) each
    h_i = f(x_i)                         the encoder (a ResNet), its pooled features  (N, F)
    z_i = g(h_i) = W_2 ReLU(W_1 h_i)     the projection head (section 2.1)            (N, P)
    loss = NT-Xent(z_1, z_2; tau)        :func:`reference.contrastive.nt_xent_loss`

After training, ``h`` (not ``z``) is the representation kept for downstream tasks (section 4.2).

The augmentation (Appendix A) is applied per image, in this order, drawing from a ``torch.Generator`` so a
pair of views is reproducible:

1. random resized crop: an area fraction in ``crop_scale`` (0.08 to 1) and an aspect ratio in 3/4 to 4/3,
   resized back to the input size (bilinear); the whole image when no such box fits in 10 tries;
2. horizontal flip with probability 1/2;
3. colour jitter with probability 0.8: brightness, contrast and saturation factors drawn uniformly in
   ``[1 - s, 1 + s]`` (strength ``s``; the paper's 0.8 * jitter). Hue jitter is left out;
4. grayscale with probability 0.2 (ITU-R 601 luma: 0.299 R + 0.587 G + 0.114 B);
5. Gaussian blur with probability 1/2, sigma in [0.1, 2.0], kernel 10% of the image side (odd).

Differences from the paper's code: the jitter's order is fixed (torchvision draws a random order), and the
operations act on float tensors in [0, 1] rather than PIL images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reference.contrastive import nt_xent_loss

__all__ = ["AugmentationConfig", "augment", "two_views", "ProjectionHead", "SimCLR"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L") and torchvision's rgb_to_grayscale


@dataclass
class AugmentationConfig:
    crop_scale: tuple[float, float] = (0.08, 1.0)  # area fraction of the random crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio (width / height) of the random crop
    flip_probability: float = 0.5
    jitter_probability: float = 0.8
    jitter_strength: float = 0.8  # brightness, contrast, saturation factors in [1 - s, 1 + s]
    grayscale_probability: float = 0.2
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self):
        for name in ("flip_probability", "jitter_probability", "grayscale_probability", "blur_probability"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            low, high = getattr(self, name)
            if not (0 < low <= high):
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)!r}")
        if self.crop_scale[1] > 1:
            raise ValueError(f"crop_scale must lie in (0, 1], got {self.crop_scale!r}")
        if not (0 <= self.jitter_strength < 1):
            raise ValueError(f"jitter_strength must be in [0, 1), got {self.jitter_strength!r}")


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _chance(generator: torch.Generator, probability: float) -> bool:
    return float(torch.rand((), generator=generator, dtype=torch.float64)) < probability


def _crop_box(height: int, width: int, config: AugmentationConfig, generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random box with the configured area fraction and aspect ratio."""
    log_low, log_high = math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])
    for _ in range(10):
        area = height * width * _uniform(generator, *config.crop_scale)
        ratio = math.exp(_uniform(generator, log_low, log_high))  # log-uniform: w/h and h/w equally likely
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    return 0, 0, height, width


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` -> ``(1, H, W)`` luma."""
    weights = image.new_tensor(_LUMA)
    return (image * weights[:, None, None]).sum(dim=0, keepdim=True)


def _blend(image: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * image + (1 - factor) * other``, clipped to [0, 1]: every jitter is a blend with something."""
    return (factor * image + (1 - factor) * other).clamp(0, 1)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)``, kernel 10% of the shorter side (odd), reflect padding."""
    size = max(3, int(0.1 * min(image.shape[-2:])) // 2 * 2 + 1)
    radius = size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()  # (size,)
    channels = image.shape[0]
    x = image[None]  # (1, C, H, W)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.expand(channels, 1, 1, size),
                 groups=channels)  # along W
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel[:, None].expand(channels, 1, size, 1),
                 groups=channels)  # along H
    return x[0]


def _augment_one(image: torch.Tensor, config: AugmentationConfig, generator: torch.Generator) -> torch.Tensor:
    height, width = image.shape[-2:]
    top, left, h, w = _crop_box(height, width, config, generator)
    crop = image[:, top : top + h, left : left + w][None]  # (1, C, h, w)
    x = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0]  # (C, H, W)
    if _chance(generator, config.flip_probability):
        x = x.flip(-1)
    if _chance(generator, config.jitter_probability):
        s = config.jitter_strength
        brightness, contrast, saturation = (_uniform(generator, 1 - s, 1 + s) for _ in range(3))
        x = _blend(x, torch.zeros_like(x), brightness)
        x = _blend(x, _grayscale(x).mean().expand_as(x), contrast)  # towards the mean luma
        x = _blend(x, _grayscale(x).expand_as(x), saturation)  # towards the pixel's own gray
    if _chance(generator, config.grayscale_probability):
        x = _grayscale(x).expand_as(x).clone()
    if _chance(generator, config.blur_probability):
        x = _gaussian_blur(x, _uniform(generator, *config.blur_sigma))
    return x


def augment(images: torch.Tensor, generator: torch.Generator,
            config: AugmentationConfig | None = None) -> torch.Tensor:
    """One random SimCLR view of each image: ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, H, W)`` in [0, 1]."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError("images must be a floating-point tensor of shape (N, 3, H, W)")
    if images.dim() != 4 or images.shape[1] != 3 or min(images.shape[-2:]) < 2:
        raise ValueError(f"images must have shape (N, 3, H, W) with H, W >= 2, got {tuple(images.shape)}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    config = config or AugmentationConfig()
    return torch.stack([_augment_one(image, config, generator) for image in images])


def two_views(images: torch.Tensor, generator: torch.Generator,
              config: AugmentationConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random views of each image (the positive pairs of NT-Xent)."""
    return augment(images, generator, config), augment(images, generator, config)


class ProjectionHead(nn.Module):
    """``g(h) = W_2 ReLU(W_1 h)``: SimCLR's MLP projection head (section 2.1), ``(N, F)`` -> ``(N, P)``."""

    def __init__(self, feature_dim: int, hidden_dim: int, projection_dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(),
                                    nn.Linear(hidden_dim, projection_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h)


class SimCLR(nn.Module):
    """An encoder ``f`` (images -> ``(N, F)`` features), the projection head ``g`` and the NT-Xent objective.

    Shapes:
        images ``(N, 3, H, W)`` -> representation ``h`` ``(N, F)`` (:meth:`represent`), projection ``z``
        ``(N, P)`` (:meth:`forward`), scalar loss (:meth:`loss`, from two views).
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, hidden_dim: int = 128, projection_dim: int = 64,
                 temperature: float = 0.5):
        super().__init__()
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.encoder = encoder
        self.head = ProjectionHead(feature_dim, hidden_dim, projection_dim)
        self.temperature = float(temperature)

    def represent(self, images: torch.Tensor) -> torch.Tensor:
        """``h = f(x)``: the representation kept after pre-training."""
        return self.encoder(images)  # (N, F)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``z = g(f(x))``: the projection the loss sees."""
        return self.head(self.represent(images))  # (N, P)

    def loss(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        """NT-Xent between the projections of two views of the same N images."""
        if view_1.shape != view_2.shape:
            raise ValueError(f"view_1 and view_2 must have one shape, got {tuple(view_1.shape)} and "
                             f"{tuple(view_2.shape)}")
        return nt_xent_loss(self(view_1), self(view_2), self.temperature)
