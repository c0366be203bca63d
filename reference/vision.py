"""A small ResNet-style CNN backbone with a projection to an embedding (a CLIP/ALBEF image tower).

He, Zhang, Ren and Sun 2016, "Deep Residual Learning for Image Recognition". The network is

    stem:    conv 7x7 / 2 -> BN -> ReLU -> max-pool 3x3 / 2          (B, C0, H/4, W/4)
    stages:  S stages of residual blocks; the first block of each stage after the first halves
             the resolution (stride 2) and changes the width; a 1x1 conv + BN "projection shortcut"
             matches the residual when the shape changes (option B of the paper)
    head:    global average pool -> linear projection                (B, projection_dim)

Blocks (section 4.1, Figure 5):

* basic:      x -> conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + shortcut(x), ReLU
* bottleneck: x -> conv1x1 -> BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv1x1 -> BN, + shortcut(x), ReLU,
              with the inner width out_channels / reduction (4 in the paper). ``downsample_in_bottleneck``
              moves the stride to the first 1x1 conv (the original Caffe ResNet; torchvision's "v1.5" strides the 3x3).

Conventions follow transformers' ``ResNetModel`` so it can serve as the oracle: convolutions have no
bias and pad ``kernel // 2``, every convolution is followed by batch norm, the activation is ReLU, and
``downsample_in_first_stage`` decides whether the first stage strides. Batch norm in eval mode uses
its running statistics; in train mode the batch's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reference._validation import check_images

__all__ = ["ConvBackboneConfig", "ConvNormAct", "BasicBlock", "BottleneckBlock", "ConvBackbone"]


@dataclass
class ConvBackboneConfig:
    num_channels: int = 3  # input image channels
    stem_channels: int = 16  # width after the stem (transformers: embedding_size)
    hidden_sizes: tuple[int, ...] = (16, 32, 64)  # output width of each stage
    depths: tuple[int, ...] = (1, 1, 1)  # blocks per stage
    block: str = "basic"  # "basic" or "bottleneck"
    reduction: int = 4  # bottleneck inner width = out_channels // reduction
    downsample_in_first_stage: bool = False
    downsample_in_bottleneck: bool = False
    projection_dim: int | None = 32  # None: return the pooled features without projection
    norm_eps: float = 1e-5

    def __post_init__(self):
        self.hidden_sizes, self.depths = tuple(self.hidden_sizes), tuple(self.depths)
        for name in ("num_channels", "stem_channels", "reduction"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if not self.hidden_sizes or len(self.hidden_sizes) != len(self.depths):
            raise ValueError(f"hidden_sizes and depths must be non-empty and of equal length, got "
                             f"{self.hidden_sizes} and {self.depths}")
        if any(not (isinstance(d, int) and d >= 1) for d in self.depths):
            raise ValueError(f"depths must be positive integers, got {self.depths}")
        if self.block == "bottleneck" and any(h % self.reduction or h < self.reduction for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be multiples of reduction={self.reduction} for bottleneck blocks, "
                             f"got {self.hidden_sizes}")
        if self.projection_dim is not None and not (isinstance(self.projection_dim, int) and self.projection_dim >= 1):
            raise ValueError(f"projection_dim must be a positive integer or None, got {self.projection_dim!r}")


class ConvNormAct(nn.Module):
    """``Conv2d(kernel, stride, padding=kernel // 2, bias=False) -> BatchNorm2d -> ReLU`` (ReLU optional)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
                 activation: bool = True, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              bias=False)
        self.norm = nn.BatchNorm2d(out_channels, eps=eps)
        self.activation = nn.ReLU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


def _shortcut(in_channels: int, out_channels: int, stride: int, eps: float) -> nn.Module:
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return ConvNormAct(in_channels, out_channels, kernel_size=1, stride=stride, activation=False, eps=eps)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a residual connection; ``stride`` in the first one."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, eps: float = 1e-5):
        super().__init__()
        self.shortcut = _shortcut(in_channels, out_channels, stride, eps)
        self.convs = nn.Sequential(
            ConvNormAct(in_channels, out_channels, 3, stride, eps=eps),
            ConvNormAct(out_channels, out_channels, 3, 1, activation=False, eps=eps),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.convs(x) + self.shortcut(x))  # (B, C_out, H / stride, W / stride)


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand, and a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, reduction: int = 4,
                 downsample_in_bottleneck: bool = False, eps: float = 1e-5):
        super().__init__()
        inner = out_channels // reduction
        first_stride, middle_stride = (stride, 1) if downsample_in_bottleneck else (1, stride)
        self.shortcut = _shortcut(in_channels, out_channels, stride, eps)
        self.convs = nn.Sequential(
            ConvNormAct(in_channels, inner, 1, first_stride, eps=eps),
            ConvNormAct(inner, inner, 3, middle_stride, eps=eps),
            ConvNormAct(inner, out_channels, 1, 1, activation=False, eps=eps),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.convs(x) + self.shortcut(x))  # (B, C_out, H / stride, W / stride)


class ConvBackbone(nn.Module):
    """Stem, residual stages, global average pooling and a linear projection to an embedding."""

    def __init__(self, config: ConvBackboneConfig):
        super().__init__()
        self.config = c = config
        self.stem = ConvNormAct(c.num_channels, c.stem_channels, kernel_size=7, stride=2, eps=c.norm_eps)
        self.stem_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        widths = (c.stem_channels, *c.hidden_sizes)
        self.stages = nn.ModuleList()
        for s, depth in enumerate(c.depths):
            stride = 2 if (s > 0 or c.downsample_in_first_stage) else 1
            blocks = [self._block(widths[s], widths[s + 1], stride)]
            blocks += [self._block(widths[s + 1], widths[s + 1], 1) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*blocks))
        self.projection = (nn.Linear(c.hidden_sizes[-1], c.projection_dim) if c.projection_dim is not None
                           else nn.Identity())

    def _block(self, in_channels: int, out_channels: int, stride: int) -> nn.Module:
        c = self.config
        if c.block == "basic":
            return BasicBlock(in_channels, out_channels, stride, eps=c.norm_eps)
        return BottleneckBlock(in_channels, out_channels, stride, c.reduction, c.downsample_in_bottleneck,
                               eps=c.norm_eps)

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` images -> ``(B, hidden_sizes[-1], H', W')`` features."""
        check_images("pixels", pixels, self.config.num_channels)
        x = self.stem_pool(self.stem(pixels))  # (B, C0, H/4, W/4)
        for stage in self.stages:
            x = stage(x)  # (B, C_s, H_s, W_s)
        return x

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        """Global average pooling of :meth:`feature_map`: ``(B, hidden_sizes[-1])``."""
        return self.feature_map(pixels).mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, projection_dim)`` embedding."""
        return self.projection(self.pooled(pixels))
