"""Vision Transformer (seed section 20).

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale".
An image is cut into non-overlapping P x P patches; each patch is flattened and projected linearly
(equivalently: a Conv2d with kernel = stride = P), a learned [CLS] token is prepended, learned position
embeddings are added, and the sequence goes through a pre-norm Transformer encoder:

    z_0 = [x_cls; x_p^1 E; ...; x_p^N E] + E_pos            E: (P*P*C, D),  E_pos: (N + 1, D)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}
    z_l  = MLP(LN(z'_l)) + z'_l                              MLP: Linear, GELU, Linear
    y    = LN(z_L)                                           the last hidden state
    pooled = tanh(W y^0 + b)                                 the [CLS] position, as transformers.ViTModel

The paper classifies from ``y^0`` with an MLP head; the ``tanh`` pooler follows BERT and
``transformers.ViTModel`` (``pooler=False`` leaves it out). Non-square images and patches are allowed:
``image_size=(H, W)``, ``patch_size=(Ph, Pw)`` give ``(H / Ph) * (W / Pw)`` patches.

The encoder layers are :class:`reference.transformer.TransformerEncoderLayer` (``norm_first=True``,
``gelu``), so attention goes through the ``backend=`` seam of :mod:`reference.attention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from reference._validation import check_divisible
from reference.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = ["ViTConfig", "PatchEmbedding", "VisionTransformer", "VisionTransformerOutput"]


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


@dataclass
class ViTConfig:
    image_size: int | tuple[int, int] = 224  # (H, W) or one side of a square image
    patch_size: int | tuple[int, int] = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12  # transformers' ViT default (the paper does not state one)
    use_position_embeddings: bool = True  # False only for permutation tests: patches become a set
    patch_bias: bool = True  # the patch projection's bias (CLIP's has none)
    pooler: bool = True
    backend: str = "reference"

    def __post_init__(self):
        (h, w), (ph, pw) = _pair(self.image_size), _pair(self.patch_size)
        if min(h, w, ph, pw) < 1:
            raise ValueError(f"image_size and patch_size must be positive, got {self.image_size}, {self.patch_size}")
        if h % ph or w % pw:
            raise ValueError(f"image_size {(h, w)} must be divisible by patch_size {(ph, pw)}")
        check_divisible("hidden_size", self.hidden_size, "num_heads", self.num_heads)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row."""
        (h, w), (ph, pw) = _pair(self.image_size), _pair(self.patch_size)
        return h // ph, w // pw

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols


class PatchEmbedding(nn.Module):
    """Cut an image into patches and project each one: ``(B, C, H, W) -> (B, N, D)``, row-major patch order."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.image_size, self.patch_size = _pair(config.image_size), _pair(config.patch_size)
        self.num_channels = config.num_channels
        # A convolution with kernel = stride = patch size is the per-patch linear projection E.
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=self.patch_size,
                                    stride=self.patch_size, bias=config.patch_bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
            raise TypeError("pixel_values must be a floating-point tensor of shape (B, C, H, W)")
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must have shape (B, C, H, W), got {tuple(pixel_values.shape)}")
        _, c, h, w = pixel_values.shape
        if c != self.num_channels:
            raise ValueError(f"pixel_values must have {self.num_channels} channels (dim 1), got {c}")
        ph, pw = self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"pixel_values' size (H, W) = {(h, w)} must be divisible by patch_size {(ph, pw)}")
        if (h, w) != self.image_size:
            raise ValueError(f"pixel_values' size (H, W) = {(h, w)} must equal image_size {self.image_size} "
                             "(the position embeddings are learned for that grid)")
        patches = self.projection(pixel_values)  # (B, D, H / Ph, W / Pw)
        return patches.flatten(2).transpose(1, 2)  # (B, N, D)


class VisionTransformerOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, N + 1, D), after the final LayerNorm; position 0 is [CLS]
    pooler_output: torch.Tensor | None  # (B, D), tanh(W y^0 + b), or None without a pooler


class VisionTransformer(nn.Module):
    """ViT encoder: patch embedding, [CLS], position embeddings, pre-norm encoder, final LayerNorm, pooler.

    Shapes:
        pixel_values ``(B, C, H, W)`` -> last_hidden_state ``(B, N + 1, D)``, pooler_output ``(B, D)``
        with ``N = (H / Ph) * (W / Pw)``.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.patch_embedding = PatchEmbedding(config)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.position_embeddings = (nn.Parameter(torch.randn(1, config.num_patches + 1, d) * 0.02)
                                    if config.use_position_embeddings else None)
        self.encoder = TransformerEncoder(
            lambda: TransformerEncoderLayer(d, config.num_heads, config.intermediate_size, activation="gelu",
                                            norm_first=True, layer_norm_eps=config.layer_norm_eps,
                                            backend=config.backend),
            config.num_layers,
            final_norm=nn.LayerNorm(d, eps=config.layer_norm_eps),
        )
        self.pooler = nn.Linear(d, d) if config.pooler else None

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``z_0``: the token sequence the encoder sees, ``(B, N + 1, D)``."""
        patches = self.patch_embedding(pixel_values)  # (B, N, D)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)  # (B, 1, D)
        tokens = torch.cat([cls, patches], dim=1)  # (B, N + 1, D)
        return tokens if self.position_embeddings is None else tokens + self.position_embeddings

    def forward(self, pixel_values: torch.Tensor) -> VisionTransformerOutput:
        hidden = self.encoder(self.embed(pixel_values))  # (B, N + 1, D), final LayerNorm applied
        pooled = torch.tanh(self.pooler(hidden[:, 0])) if self.pooler is not None else None  # (B, D)
        return VisionTransformerOutput(hidden, pooled)

    @torch.no_grad()
    def copy_from_transformers(self, theirs) -> VisionTransformer:
        """Load the weights of a ``transformers.ViTModel`` built from the matching ``ViTConfig``."""
        if len(theirs.layers) != len(self.encoder.layers):
            raise ValueError(f"copy_from_transformers: {len(theirs.layers)} layers there, "
                             f"{len(self.encoder.layers)} here")
        if self.position_embeddings is None:
            raise ValueError("copy_from_transformers: transformers' ViT has position embeddings; this one has none")
        if (theirs.pooler is None) != (self.pooler is None):
            raise ValueError("copy_from_transformers: one model has a pooler and the other has not")
        embeddings = theirs.embeddings
        self.patch_embedding.projection.load_state_dict(embeddings.patch_embeddings.projection.state_dict())
        self.cls_token.copy_(embeddings.cls_token)
        self.position_embeddings.copy_(embeddings.position_embeddings)
        for ours, layer in zip(self.encoder.layers, theirs.layers, strict=True):
            attention = layer.attention
            for mine, their_name in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj"),
                                     ("out_proj", "o_proj")):
                getattr(ours.self_attn, mine).load_state_dict(getattr(attention, their_name).state_dict())
            ours.norm1.load_state_dict(layer.layernorm_before.state_dict())
            ours.norm2.load_state_dict(layer.layernorm_after.state_dict())
            ours.feed_forward.linear1.load_state_dict(layer.mlp.fc1.state_dict())
            ours.feed_forward.linear2.load_state_dict(layer.mlp.fc2.state_dict())
        self.encoder.norm.load_state_dict(theirs.layernorm.state_dict())
        if self.pooler is not None:
            self.pooler.load_state_dict(theirs.pooler.dense.state_dict())
        return self
