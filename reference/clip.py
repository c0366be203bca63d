"""The CLIP dual encoder: an image tower, a text tower, two projections and a learned temperature (seed section 7).

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision", section 2.4 and
Figure 3. Each modality has its own Transformer; their pooled outputs are projected linearly (no bias) into one
joint space, where matching (image, text) pairs are pulled together and the rest of the batch pushed apart:

    image tower   z = [x_cls; patches E] + E_pos;  z = LN_pre(z);  z = Encoder(z)   pre-norm layers
                  u = LN_post(z^0)                                                   the [CLS] position
    text tower    h = W_tok[t] + W_pos;  h = LN_final(Encoder(h, causal))            pre-norm layers
                  v = h^{eos}                                                        the first end-of-text token
    joint space   I = u W_i,   T = v W_t                                             (B, P) each
    logits        logits_per_image = exp(t) * cos(I_i, T_j) = logits_per_text^T     (B, B)
    loss          ( CE(logits_per_image, diag) + CE(logits_per_text, diag) ) / 2    :func:`clip_loss`

The text tower is a causally masked Transformer (the paper kept the mask so a language-modelling objective could
be added); padding after the end-of-text token is masked out of every key set as well. Both towers use the
sigmoid approximation of GELU, ``x * sigmoid(1.702 x)`` (``quick_gelu``), as OpenAI's released weights do.

Every attention goes through :class:`reference.transformer.TransformerEncoderLayer` ->
:class:`reference.attention.MultiHeadAttention` -> the ``backend=`` seam (:attr:`ClipConfig.backend`), so
``backend="triton"`` runs both towers on the kernel.

Conventions follow ``transformers.CLIPModel`` so weights copy one to one (:meth:`ClipModel.copy_from_transformers`).
Difference, on purpose: the logit scale is clamped at 100 in the forward pass (the paper's clipping, in
:func:`reference.contrastive.clip_logits`); transformers' ``CLIPModel`` does not clamp, so the two agree while
``exp(t) <= 100``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from reference._validation import check_choice, check_divisible, check_token_id, check_token_ids
from reference.contrastive import CLIP_INIT_TEMPERATURE, CLIP_MAX_LOGIT_SCALE, clip_logits, clip_loss
from reference.transformer import ACTIVATIONS, TransformerEncoder, TransformerEncoderLayer
from reference.vit import PatchEmbedding, ViTConfig

__all__ = ["ClipTextConfig", "ClipVisionConfig", "ClipConfig", "ClipTextTransformer", "ClipVisionTransformer",
           "ClipOutput", "ClipModel"]


@dataclass
class ClipTextConfig:
    """The text tower; names and defaults (ViT-B/32's text tower) follow ``transformers.CLIPTextConfig``."""

    vocab_size: int = 49408
    hidden_size: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407  # the end-of-text token whose output is the text's embedding

    def __post_init__(self):
        _check_tower(self)
        check_token_id("eos_token_id", self.eos_token_id, self.vocab_size)


@dataclass
class ClipVisionConfig:
    """The image tower; names and defaults (ViT-B/32) follow ``transformers.CLIPVisionConfig``."""

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        _check_tower(self)


@dataclass
class ClipConfig:
    text: ClipTextConfig = field(default_factory=ClipTextConfig)
    vision: ClipVisionConfig = field(default_factory=ClipVisionConfig)
    projection_dim: int = 512  # the joint embedding space
    init_temperature: float = CLIP_INIT_TEMPERATURE  # the logit scale starts at log(1 / 0.07)
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE
    backend: str = "reference"  # the attention seam's backend, for every attention layer of both towers

    @classmethod
    def from_transformers(cls, config, backend: str = "reference") -> ClipConfig:
        """The model a ``transformers.CLIPConfig`` describes (dropout ignored; temperature from its init value)."""
        text = ClipTextConfig(**{name: getattr(config.text_config, name) for name in ClipTextConfig.__annotations__})
        vision = ClipVisionConfig(**{name: getattr(config.vision_config, name)
                                     for name in ClipVisionConfig.__annotations__})
        return cls(text, vision, config.projection_dim, math.exp(-config.logit_scale_init_value), backend=backend)


def _check_tower(config) -> None:
    check_divisible("hidden_size", config.hidden_size, "num_attention_heads", config.num_attention_heads)
    check_choice("hidden_act", config.hidden_act, ACTIVATIONS)


def _pre_norm_encoder(config, backend: str) -> TransformerEncoder:
    return TransformerEncoder(
        lambda: TransformerEncoderLayer(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                                        activation=config.hidden_act, norm_first=True,
                                        layer_norm_eps=config.layer_norm_eps, backend=backend),
        config.num_hidden_layers,
    )


class ClipTextTransformer(nn.Module):
    """Token + position embeddings, causal pre-norm encoder, final LayerNorm; the output at the first eos token.

    Shapes:
        input_ids ``(B, N)``, attention_mask ``(B, N)`` (1 = real, 0 = padding)
        -> last_hidden_state ``(B, N, D)``, pooled ``(B, D)``.
    """

    def __init__(self, config: ClipTextConfig, backend: str = "reference"):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.encoder = _pre_norm_encoder(config, backend)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        check_token_ids("input_ids", input_ids, config.vocab_size, max_length=config.max_position_embeddings,
                        length_limit="max_position_embeddings")
        is_eos = input_ids == config.eos_token_id  # (B, N)
        if not bool(is_eos.any(dim=1).all()):
            raise ValueError(f"input_ids must hold the end-of-text token (eos_token_id={config.eos_token_id}) in "
                             "every row: its output is the text's embedding")
        padding = None
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask must have the shape of input_ids (B, N) = {tuple(input_ids.shape)}")
            if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
                raise ValueError("attention_mask must hold only 1 (real token) and 0 (padding)")
            if not bool(attention_mask[:, 0].bool().all()):
                # With the causal mask, a padded first token leaves its query with no key at all.
                raise ValueError("attention_mask must mark the first token of every row as real (padding goes last)")
            padding = attention_mask == 0  # (B, N), True = padding
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (N,)
        hidden = self.token_embedding(input_ids) + self.position_embedding(positions)  # (B, N, D)
        hidden = self.encoder(hidden, is_causal=True, key_padding_mask=padding)  # (B, N, D)
        hidden = self.final_layer_norm(hidden)
        first_eos = is_eos.int().argmax(dim=1)  # (B,): argmax returns the first maximum
        return hidden, hidden[torch.arange(hidden.shape[0], device=hidden.device), first_eos]  # (B, N, D), (B, D)


class ClipVisionTransformer(nn.Module):
    """Patch embedding (no bias), [CLS], positions, LayerNorm, pre-norm encoder; LayerNorm of the [CLS] output.

    Shapes:
        pixel_values ``(B, C, H, W)`` -> last_hidden_state ``(B, 1 + N, D)`` (before the post LayerNorm, as in
        transformers), pooled ``(B, D)``.
    """

    def __init__(self, config: ClipVisionConfig, backend: str = "reference"):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.patch_embedding = PatchEmbedding(ViTConfig(image_size=config.image_size, patch_size=config.patch_size,
                                                        num_channels=config.num_channels, hidden_size=d,
                                                        num_heads=config.num_attention_heads, patch_bias=False))
        num_positions = (config.image_size // config.patch_size) ** 2 + 1
        self.class_embedding = nn.Parameter(torch.randn(d) * 0.02)
        self.position_embedding = nn.Embedding(num_positions, d)
        self.pre_layernorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.encoder = _pre_norm_encoder(config, backend)
        self.post_layernorm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self.patch_embedding(pixel_values)  # (B, N, D)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)  # (B, 1, D)
        hidden = torch.cat([cls, patches], dim=1) + self.position_embedding.weight  # (B, 1 + N, D)
        hidden = self.encoder(self.pre_layernorm(hidden))  # (B, 1 + N, D)
        return hidden, self.post_layernorm(hidden[:, 0])  # (B, 1 + N, D), (B, D)


class ClipOutput(NamedTuple):
    logits_per_image: torch.Tensor  # (B, B): row i = image i against every text
    logits_per_text: torch.Tensor  # (B, B): the transpose
    image_embeds: torch.Tensor  # (B, P), L2-normalised
    text_embeds: torch.Tensor  # (B, P), L2-normalised
    loss: torch.Tensor | None  # the symmetric InfoNCE, when asked for


class ClipModel(nn.Module):
    """The dual encoder: both towers, both projections and the learned log-temperature ``logit_scale``.

    ``forward(input_ids, pixel_values, attention_mask=None, return_loss=False)``: text ``i`` and image ``i``
    are the matching pair ``i`` of a batch of ``B``.
    """

    def __init__(self, config: ClipConfig):
        super().__init__()
        if not (isinstance(config.init_temperature, (int, float)) and config.init_temperature > 0):
            raise ValueError(f"init_temperature must be a positive number, got {config.init_temperature!r}")
        self.config = config
        self.text_model = ClipTextTransformer(config.text, config.backend)
        self.vision_model = ClipVisionTransformer(config.vision, config.backend)
        self.text_projection = nn.Linear(config.text.hidden_size, config.projection_dim, bias=False)
        self.visual_projection = nn.Linear(config.vision.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N) -> (B, P)``: the text's point in the joint space (not normalised)."""
        return self.text_projection(self.text_model(input_ids, attention_mask)[1])

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, P)``: the image's point in the joint space (not normalised)."""
        return self.visual_projection(self.vision_model(pixel_values)[1])

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *, return_loss: bool = False) -> ClipOutput:
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(f"pixel_values must hold one image per text: B = {input_ids.shape[0]}, "
                             f"got {pixel_values.shape[0]}")
        image, text = self.encode_image(pixel_values), self.encode_text(input_ids, attention_mask)  # (B, P) each
        logits_per_image = clip_logits(image, text, self.logit_scale, max_logit_scale=self.config.max_logit_scale)
        loss = None
        if return_loss:
            loss = clip_loss(image, text, self.logit_scale, max_logit_scale=self.config.max_logit_scale)
        return ClipOutput(logits_per_image, logits_per_image.T, image / image.norm(dim=-1, keepdim=True),
                          text / text.norm(dim=-1, keepdim=True), loss)

    @torch.no_grad()
    def copy_from_transformers(self, theirs) -> ClipModel:
        """Load the weights of a ``transformers.CLIPModel`` built from the matching ``CLIPConfig``."""
        for ours, tower in ((self.text_model, theirs.text_model), (self.vision_model, theirs.vision_model)):
            if len(ours.encoder.layers) != len(tower.encoder.layers):
                raise ValueError(f"copy_from_transformers: {len(tower.encoder.layers)} layers there, "
                                 f"{len(ours.encoder.layers)} here")
            for layer, their_layer in zip(ours.encoder.layers, tower.encoder.layers, strict=True):
                for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    getattr(layer.self_attn, name).load_state_dict(getattr(their_layer.self_attn, name).state_dict())
                layer.norm1.load_state_dict(their_layer.layer_norm1.state_dict())
                layer.norm2.load_state_dict(their_layer.layer_norm2.state_dict())
                layer.feed_forward.linear1.load_state_dict(their_layer.mlp.fc1.state_dict())
                layer.feed_forward.linear2.load_state_dict(their_layer.mlp.fc2.state_dict())
        text, their_text = self.text_model, theirs.text_model
        text.token_embedding.load_state_dict(their_text.embeddings.token_embedding.state_dict())
        text.position_embedding.load_state_dict(their_text.embeddings.position_embedding.state_dict())
        text.final_layer_norm.load_state_dict(their_text.final_layer_norm.state_dict())
        vision, their_vision = self.vision_model, theirs.vision_model
        vision.patch_embedding.projection.load_state_dict(their_vision.embeddings.patch_embedding.state_dict())
        vision.class_embedding.copy_(their_vision.embeddings.class_embedding)
        vision.position_embedding.load_state_dict(their_vision.embeddings.position_embedding.state_dict())
        vision.pre_layernorm.load_state_dict(their_vision.pre_layrnorm.state_dict())  # sic: transformers' name
        vision.post_layernorm.load_state_dict(their_vision.post_layernorm.state_dict())
        self.text_projection.load_state_dict(theirs.text_projection.state_dict())
        self.visual_projection.load_state_dict(theirs.visual_projection.state_dict())
        self.logit_scale.copy_(theirs.logit_scale)
        return self
