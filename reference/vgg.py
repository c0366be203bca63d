"""VGG: a plain stack of 3x3 convolutions as a CNN feature extractor (seed sections 13 and 27).

Simonyan and Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image Recognition". The
network is a sequence of blocks of 3x3 convolutions (stride 1, padding 1, so the size is kept) each followed
by ReLU, and 2x2 max-pooling (stride 2) between blocks, which halves the size; the widths double after each
pool from 64 up to 512. Table 1 of the paper names the configurations by letter ("M" is a max-pool):

    A  (VGG-11)  64 M 128 M 256 256 M 512 512 M 512 512 M
    B  (VGG-13)  64 64 M 128 128 M 256 256 M 512 512 M 512 512 M
    D  (VGG-16)  64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M
    E  (VGG-19)  64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M

Heads:

* classifier (the paper's ImageNet network): adaptive average pooling to ``pool_size`` x ``pool_size`` (7 x 7,
  the size a 224 x 224 image reaches after five pools; as torchvision does, so other sizes work too), then
  FC-4096 -> ReLU -> dropout -> FC-4096 -> ReLU -> dropout -> FC-num_classes;
* backbone (``num_classes=None``): global average pooling of the last feature map and an optional linear
  projection to an embedding, like :class:`reference.vision.ConvBackbone`.

``batch_norm=True`` puts a BatchNorm after every convolution (the "_bn" variants, not in the paper). The
convolutions have biases (unlike ResNet's, which are followed by batch norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reference._validation import check_images

__all__ = ["VGG_LAYERS", "VGGConfig", "VGG", "vgg_config"]

VGG_LAYERS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # configuration A
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # B
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),  # D
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512,
              "M"),  # E
}


@dataclass
class VGGConfig:
    layers: tuple[int | str, ...] = VGG_LAYERS["vgg16"]  # conv widths, "M" for a 2x2 max-pool
    num_channels: int = 3
    batch_norm: bool = False
    num_classes: int | None = 1000  # None: a backbone (global average pool + optional projection)
    classifier_width: int = 4096  # the two hidden fully connected layers
    pool_size: int = 7  # the classifier's adaptive average pool
    dropout: float = 0.5
    projection_dim: int | None = None  # backbone only: the embedding size, None for the pooled features
    norm_eps: float = 1e-5

    def __post_init__(self):
        self.layers = tuple(self.layers)
        if not any(isinstance(x, int) for x in self.layers):
            raise ValueError(f"layers must hold at least one convolution width, got {self.layers!r}")
        for x in self.layers:
            if x != "M" and not (isinstance(x, int) and not isinstance(x, bool) and x >= 1):
                raise ValueError(f"layers must hold positive widths or 'M' (max-pool), got {x!r}")
        for name in ("num_channels", "classifier_width", "pool_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("num_classes", "projection_dim"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.num_classes is not None and self.projection_dim is not None:
            raise ValueError("projection_dim is for the backbone (num_classes=None); the classifier has its own head")
        if not (0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def out_channels(self) -> int:
        return [x for x in self.layers if x != "M"][-1]


def vgg_config(name: str, **overrides) -> VGGConfig:
    """The paper's configuration ``name`` ("vgg11", "vgg13", "vgg16", "vgg19"), with any field overridden."""
    if name not in VGG_LAYERS:
        raise ValueError(f"name must be one of {sorted(VGG_LAYERS)}, got {name!r}")
    return VGGConfig(layers=VGG_LAYERS[name], **overrides)


class VGG(nn.Module):
    """The convolution stack ``features`` and a classifier or backbone head.

    Shapes:
        pixels ``(B, C_in, H, W)`` -> feature map ``(B, C_last, H / 2^pools, W / 2^pools)`` (rounded down at
        each pool) -> logits ``(B, num_classes)``, or, as a backbone, ``(B, projection_dim or C_last)``.
    """

    def __init__(self, config: VGGConfig):
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = []
        channels = c.num_channels
        for x in c.layers:
            if x == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(channels, x, kernel_size=3, padding=1))
            if c.batch_norm:
                layers.append(nn.BatchNorm2d(x, eps=c.norm_eps))
            layers.append(nn.ReLU())
            channels = x
        self.features = nn.Sequential(*layers)
        if c.num_classes is not None:
            self.pool = nn.AdaptiveAvgPool2d(c.pool_size)
            self.classifier = nn.Sequential(
                nn.Linear(channels * c.pool_size**2, c.classifier_width), nn.ReLU(), nn.Dropout(c.dropout),
                nn.Linear(c.classifier_width, c.classifier_width), nn.ReLU(), nn.Dropout(c.dropout),
                nn.Linear(c.classifier_width, c.num_classes),
            )
        else:
            self.projection = nn.Linear(channels, c.projection_dim) if c.projection_dim else nn.Identity()

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` images -> the last convolution block's output (after its pool, if any)."""
        check_images("pixels", pixels, self.config.num_channels)
        pools = self.config.layers.count("M")
        if min(pixels.shape[-2:]) < 2**pools:
            raise ValueError(f"pixels: H and W must be at least 2^{pools} = {2**pools} for {pools} max-pools, "
                             f"got {tuple(pixels.shape[-2:])}")
        return self.features(pixels)  # (B, C_last, H', W')

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        """Global average pooling of :meth:`feature_map`: ``(B, C_last)``."""
        return self.feature_map(pixels).mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.config.num_classes is None:
            return self.projection(self.pooled(pixels))  # (B, projection_dim or C_last)
        x = self.pool(self.feature_map(pixels))  # (B, C_last, pool_size, pool_size)
        return self.classifier(x.flatten(1))  # (B, num_classes)
