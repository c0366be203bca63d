"""Two-stream multimodal fusion: co-attention transformer and the models built on it (seed sections 21, 14, 24).

**Co-attention** (section 21). Lu et al. 2019, "ViLBERT: Pretraining Task-Agnostic Visiolinguistic
Representations for Vision-and-Language Tasks", and Tan & Bansal 2019, "LXMERT: Learning Cross-Modality
Encoder Representations from Transformers" (its cross-modality layer, which this follows). Text and image
keep separate streams, of their own widths; in each layer each stream first attends to the *other*
stream, then to itself, then through its own feed-forward network (post-norm, BERT style):

    t' = LN(t + MHA(q = t, k = v = i))          i' = LN(i + MHA(q = i, k = v = t))     (simultaneous)
    t'' = EncoderLayer_text(t')                 i'' = EncoderLayer_image(i')           (self-attention + FFN)

Padding in either stream is masked out of every key set that contains it. Nothing here depends on the
order of tokens: without position embeddings (added by the encoders, not here) permuting one stream's
tokens permutes its outputs and leaves the other stream's outputs unchanged.

**Multimodal fusion model** (section 14): an encoder per modality (text: token + position embeddings and
self-attention layers; image: a projection of region features, e.g. from a detector or a CNN grid, and
self-attention layers), co-attention fusion, and a task head on the fused representation, the
concatenated masked means of the two streams; everything trains jointly through the head's loss.
ViLBERT adds a 5-d box-location embedding to each region; here regions are their features alone.

**Image-text classifier** (section 24): the fusion model fed by a Vision Transformer's patch tokens
(:mod:`reference.vit`) instead of region features, with a class head, cross-entropy loss and prediction.

All attention goes through :class:`reference.attention.MultiHeadAttention` and so through the
``backend=`` seam (``FusionConfig.backend``, passed to every layer).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reference._validation import check_divisible, check_token_ids
from reference.attention import MultiHeadAttention
from reference.transformer import TransformerEncoder, TransformerEncoderLayer
from reference.vit import VisionTransformer, ViTConfig

__all__ = ["FusionConfig", "CrossAttentionBlock", "CoAttentionLayer", "CoAttentionTransformer", "TextEncoder",
           "RegionEncoder", "masked_mean", "MultimodalFusionModel", "ImageTextClassifier"]


@dataclass
class FusionConfig:
    vocab_size: int = 30522
    max_text_length: int = 128
    text_dim: int = 768
    image_dim: int = 1024  # the image stream may be wider than the text stream (ViLBERT: 768 / 1024)
    num_heads: int = 8  # in every attention of both streams
    ffn_ratio: int = 4  # feed-forward width = ffn_ratio * stream width
    num_text_layers: int = 2  # self-attention layers of the text encoder, before fusion
    num_image_layers: int = 2  # self-attention layers of the image encoder, before fusion
    num_fusion_layers: int = 2  # co-attention layers
    image_feature_dim: int = 2048  # region features in (MultimodalFusionModel)
    num_outputs: int = 2  # task head outputs (classes for ImageTextClassifier)
    use_position_embeddings: bool = True  # text positions; False makes the text a set (permutation tests)
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    backend: str = "reference"

    def __post_init__(self):
        for name in ("text_dim", "image_dim"):
            check_divisible(name, getattr(self, name), "num_heads", self.num_heads)


def _encoder_layer(config: FusionConfig, dim: int) -> TransformerEncoderLayer:
    return TransformerEncoderLayer(dim, config.num_heads, config.ffn_ratio * dim, activation=config.activation,
                                   norm_first=False, layer_norm_eps=config.layer_norm_eps, backend=config.backend)


def _check_stream(name: str, x, dim: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (B, N, {dim})")
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (B, N, {dim}), got {tuple(x.shape)}")


def _check_padding(name: str, mask, shape: tuple[int, int]) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = padding)")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape (B, N) = {shape}, got {tuple(mask.shape)}")
    if mask.all(dim=1).any():
        raise ValueError(f"{name} leaves a sequence with no real token")


# --------------------------------------------------------------------------------------------------
# Co-attention (section 21)
# --------------------------------------------------------------------------------------------------


class CrossAttentionBlock(nn.Module):
    """``LN(x + MHA(q = x, k = v = context))``: one stream attends to the other.

    Shapes:
        x ``(B, Nq, query_dim)``, context ``(B, Nk, context_dim)``, context_padding_mask ``(B, Nk)``
        -> ``(B, Nq, query_dim)``.
    """

    def __init__(self, query_dim: int, context_dim: int, num_heads: int, *, layer_norm_eps: float = 1e-12,
                 backend: str = "reference"):
        super().__init__()
        self.attn = MultiHeadAttention(query_dim, num_heads, kv_dim=context_dim, backend=backend)
        self.norm = nn.LayerNorm(query_dim, eps=layer_norm_eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_padding_mask=None) -> torch.Tensor:
        return self.norm(x + self.attn(x, context, key_padding_mask=context_padding_mask))


class CoAttentionLayer(nn.Module):
    """Text attends to image and image to text (from the same inputs), then each stream's encoder layer."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        heads, eps, backend = config.num_heads, config.layer_norm_eps, config.backend
        self.text_cross = CrossAttentionBlock(config.text_dim, config.image_dim, heads, layer_norm_eps=eps,
                                              backend=backend)
        self.image_cross = CrossAttentionBlock(config.image_dim, config.text_dim, heads, layer_norm_eps=eps,
                                               backend=backend)
        self.text_self = _encoder_layer(config, config.text_dim)
        self.image_self = _encoder_layer(config, config.image_dim)

    def forward(self, text, image, text_padding_mask=None, image_padding_mask=None):
        text_x = self.text_cross(text, image, image_padding_mask)  # (B, Nt, Dt)
        image_x = self.image_cross(image, text, text_padding_mask)  # (B, Ni, Di)
        return (self.text_self(text_x, key_padding_mask=text_padding_mask),
                self.image_self(image_x, key_padding_mask=image_padding_mask))


class CoAttentionTransformer(nn.Module):
    """A stack of co-attention layers over a text stream and an image stream.

    Shapes:
        text ``(B, Nt, text_dim)``, image ``(B, Ni, image_dim)``, text_padding_mask ``(B, Nt)``,
        image_padding_mask ``(B, Ni)`` (bool, True = padding) -> (text ``(B, Nt, text_dim)``,
        image ``(B, Ni, image_dim)``).
    """

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(CoAttentionLayer(config) for _ in range(config.num_fusion_layers))

    def forward(self, text: torch.Tensor, image: torch.Tensor, *, text_padding_mask: torch.Tensor | None = None,
                image_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_stream("text", text, self.config.text_dim)
        _check_stream("image", image, self.config.image_dim)
        if image.shape[0] != text.shape[0]:
            raise ValueError(f"image must have the batch size of text ({text.shape[0]}), got {image.shape[0]}")
        if image.dtype != text.dtype:
            raise TypeError(f"text and image must share a dtype, got {text.dtype} and {image.dtype}")
        _check_padding("text_padding_mask", text_padding_mask, tuple(text.shape[:2]))
        _check_padding("image_padding_mask", image_padding_mask, tuple(image.shape[:2]))
        for layer in self.layers:
            text, image = layer(text, image, text_padding_mask, image_padding_mask)
        return text, image


# --------------------------------------------------------------------------------------------------
# Modality encoders and the fusion model (section 14)
# --------------------------------------------------------------------------------------------------


class TextEncoder(nn.Module):
    """Token (+ position) embeddings, LayerNorm, self-attention layers: ``(B, Nt) ids -> (B, Nt, text_dim)``."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        self.token_embeddings = nn.Embedding(config.vocab_size, config.text_dim)
        self.position_embeddings = (nn.Embedding(config.max_text_length, config.text_dim)
                                    if config.use_position_embeddings else None)
        self.norm = nn.LayerNorm(config.text_dim, eps=config.layer_norm_eps)
        self.encoder = TransformerEncoder(lambda: _encoder_layer(config, config.text_dim), config.num_text_layers)

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        config = self.config
        check_token_ids("input_ids", input_ids, config.vocab_size, max_length=config.max_text_length,
                        length_limit="max_text_length")
        _check_padding("text_padding_mask", padding_mask, tuple(input_ids.shape))
        x = self.token_embeddings(input_ids)  # (B, Nt, Dt)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(torch.arange(input_ids.shape[1], device=input_ids.device))
        return self.encoder(self.norm(x), key_padding_mask=padding_mask)


class RegionEncoder(nn.Module):
    """Project region features, LayerNorm, self-attention layers: ``(B, Ni, F) -> (B, Ni, image_dim)``."""

    def __init__(self, config: FusionConfig, feature_dim: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.projection = nn.Linear(feature_dim, config.image_dim)
        self.norm = nn.LayerNorm(config.image_dim, eps=config.layer_norm_eps)
        self.encoder = TransformerEncoder(lambda: _encoder_layer(config, config.image_dim), config.num_image_layers)

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_stream("image_features", features, self.feature_dim)
        _check_padding("image_padding_mask", padding_mask, tuple(features.shape[:2]))
        return self.encoder(self.norm(self.projection(features)), key_padding_mask=padding_mask)


def masked_mean(x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the real tokens: ``(B, N, D), (B, N) bool (True = padding) -> (B, D)``."""
    if padding_mask is None:
        return x.mean(dim=1)
    keep = (~padding_mask)[..., None]  # (B, N, 1)
    # where() rather than x * keep: a non-finite value in a padded slot must not leak in as 0 * inf = nan
    return torch.where(keep, x, torch.zeros_like(x)).sum(dim=1) / keep.sum(dim=1).to(x.dtype)


class MultimodalFusionModel(nn.Module):
    """Text encoder + region encoder -> co-attention fusion -> fused representation -> task head.

    Shapes:
        input_ids ``(B, Nt)``, image_features ``(B, Ni, image_feature_dim)``, text_padding_mask ``(B, Nt)``,
        image_padding_mask ``(B, Ni)`` -> ``(B, num_outputs)``; :meth:`fuse` gives the fused
        representation ``(B, text_dim + image_dim)``.
    """

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        self.text_encoder = TextEncoder(config)
        self.image_encoder = RegionEncoder(config, config.image_feature_dim)
        self.fusion = CoAttentionTransformer(config)
        fused_dim = config.text_dim + config.image_dim
        self.head = nn.Sequential(nn.Linear(fused_dim, fused_dim), nn.GELU(), nn.Linear(fused_dim, config.num_outputs))

    def fuse(self, input_ids: torch.Tensor, image_features: torch.Tensor, *,
             text_padding_mask: torch.Tensor | None = None,
             image_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if image_features.shape[0] != input_ids.shape[0]:
            raise ValueError(f"image_features must have the batch size of input_ids ({input_ids.shape[0]}), "
                             f"got {image_features.shape[0]}")
        text = self.text_encoder(input_ids, text_padding_mask)  # (B, Nt, Dt)
        image = self.image_encoder(image_features, image_padding_mask)  # (B, Ni, Di)
        text, image = self.fusion(text, image, text_padding_mask=text_padding_mask,
                                  image_padding_mask=image_padding_mask)
        return torch.cat([masked_mean(text, text_padding_mask), masked_mean(image, image_padding_mask)], dim=-1)

    def forward(self, input_ids: torch.Tensor, image_features: torch.Tensor, *,
                text_padding_mask: torch.Tensor | None = None,
                image_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        fused = self.fuse(input_ids, image_features, text_padding_mask=text_padding_mask,
                          image_padding_mask=image_padding_mask)  # (B, Dt + Di)
        return self.head(fused)  # (B, num_outputs)


# --------------------------------------------------------------------------------------------------
# Image + text -> class (section 24)
# --------------------------------------------------------------------------------------------------


class ImageTextClassifier(nn.Module):
    """Image (pixels, through a ViT) + text -> class logits over the fused representation.

    The ViT's patch tokens (with its [CLS]) take the place of region features; ``vision.hidden_size``
    becomes the fusion model's ``image_feature_dim``; ``config.num_outputs`` is the number of classes.

    Shapes:
        pixel_values ``(B, C, H, W)``, input_ids ``(B, Nt)``, text_padding_mask ``(B, Nt)``
        -> logits ``(B, num_classes)``.
    """

    def __init__(self, config: FusionConfig, vision: ViTConfig):
        super().__init__()
        if vision.backend != config.backend:
            raise ValueError(f"vision.backend ({vision.backend!r}) must equal config.backend ({config.backend!r})")
        self.vision = VisionTransformer(dataclasses.replace(vision, pooler=False))  # the tokens are used, not a pool
        self.fusion_model = MultimodalFusionModel(dataclasses.replace(config, image_feature_dim=vision.hidden_size))

    @property
    def num_classes(self) -> int:
        return self.fusion_model.config.num_outputs

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, *,
                text_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        patches = self.vision(pixel_values).last_hidden_state  # (B, 1 + P, Dv)
        return self.fusion_model(input_ids, patches, text_padding_mask=text_padding_mask)  # (B, num_classes)

    def loss(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor, *,
             text_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy of the logits against ``labels`` ``(B,)`` in ``[0, num_classes)``."""
        if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int32, torch.int64):
            raise TypeError("labels must be an integer tensor of shape (B,)")
        if tuple(labels.shape) != (input_ids.shape[0],):
            raise ValueError(f"labels must have shape (B,) = ({input_ids.shape[0]},), got {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, num_classes = {self.num_classes})")
        logits = self(pixel_values, input_ids, text_padding_mask=text_padding_mask)
        return F.cross_entropy(logits, labels.long())

    @torch.no_grad()
    def predict(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, *,
                text_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(classes (B,), probabilities (B, num_classes))``."""
        probabilities = torch.softmax(self(pixel_values, input_ids, text_padding_mask=text_padding_mask), dim=-1)
        return probabilities.argmax(dim=-1), probabilities
