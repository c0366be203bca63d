"""Image-text matching (ITM): is this caption about this image? A binary head over a fused representation,
trained on hard negatives mined from the contrastive similarity matrix.

Li et al. 2021, "Align before Fuse" (ALBEF), section 3.2. A fusion encoder reads an (image, text)
pair and its [CLS] output ``h`` goes through a linear head to two logits, class 1 = matched:

    logits = W h + b                     (P, 2)
    loss   = CE(logits, y),  y in {0, 1}

Negatives are *hard*: for each image ``i`` in a batch of B pairs one text ``j != i`` is drawn with
probability proportional to ``exp(sim[i, j])`` (the contrastive image-to-text logits), so texts the
contrastive model confuses with the right one are drawn most often; likewise one image for each text
from the columns of ``sim``. A batch of B positives thus yields 3B pairs: B matched, 2B unmatched.

Difference from ALBEF's code, on purpose: ALBEF takes the softmax over the whole row, adds 1e-5 and
zeroes the diagonal before ``torch.multinomial``; here the diagonal is masked *before* the softmax,
which is the same distribution over ``j != i`` up to the 1e-5 but stays defined when the positive
holds all of the softmax mass (the row's other probabilities would underflow to zero otherwise).
Sampling runs without gradient: it picks indices, it is not part of the loss.

**The fusion encoder** (:class:`ImageTextMatchingModel`), as in ALBEF and BLIP (Li et al. 2022, "BLIP:
Bootstrapping Language-Image Pre-training", section 3.1, its "image-grounded text encoder"). A ViT encodes the
image into patch features; a BERT-style text encoder reads the caption, and in every layer each text token
also attends to the image's patches (cross-attention), between its self-attention and its feed-forward network:

    v = ViT(pixels)                                        (B, 1 + P, Dv)   the image's [CLS] and patches
    h = LN(W_word[t] + W_pos)                              (B, N, D)
    h = LN(h + SelfAttn(h));  h = LN(h + CrossAttn(q = h, k = v = v));  h = LN(h + FFN(h))   per layer
    logits = W_itm h^0 + b                                 (B, 2)  the first (BLIP: [ENC]) token

Without the image the same text encoder skips its cross-attention and is the *unimodal* text encoder whose
first output, projected and normalised, meets the image's projected [CLS] in the contrastive similarity
``s_ij = <I_i, T_j> / tau`` (:meth:`ImageTextMatchingModel.contrastive_similarity`): the matrix the hard
negatives are drawn from (:meth:`ImageTextMatchingModel.itm_loss`). Conventions follow
``transformers.BlipForImageTextRetrieval`` (``use_itm_head=True`` gives the ITM logits, ``False`` the cosine
similarities), so weights copy one to one; every attention goes through the ``backend=`` seam.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from reference._validation import check_choice, check_divisible, check_token_ids
from reference.attention import MultiHeadAttention
from reference.transformer import ACTIVATIONS, FeedForward
from reference.vit import VisionTransformer, ViTConfig

__all__ = ["hard_negative_probabilities", "sample_hard_negatives", "build_itm_pairs", "ImageTextMatchingHead",
           "FusionTextConfig", "ImageTextMatchingConfig", "FusionEncoderLayer", "FusionTextEncoder",
           "ImageTextMatchingModel"]


def _check_similarity(similarity) -> None:
    if not isinstance(similarity, torch.Tensor) or not similarity.is_floating_point():
        raise TypeError("similarity must be a floating-point tensor of image-to-text logits")
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square (B, B) matrix, got shape {tuple(similarity.shape)}")
    if similarity.shape[0] < 2:
        raise ValueError(f"similarity needs a batch of at least 2 to hold a negative, got B = {similarity.shape[0]}")
    if not torch.isfinite(similarity).all():
        raise ValueError("similarity must be finite")


def hard_negative_probabilities(similarity: torch.Tensor) -> torch.Tensor:
    """``(B, B)``: row i is ``softmax_j(sim[i, j])`` over ``j != i``, with exactly 0 on the diagonal."""
    _check_similarity(similarity)
    positives = torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    return torch.softmax(similarity.detach().masked_fill(positives, -math.inf), dim=-1)  # (B, B)


def sample_hard_negatives(
    similarity: torch.Tensor, *, num_samples: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """For each row i, a column ``j != i`` drawn with probability :func:`hard_negative_probabilities`.

    Returns ``(B,)`` int64 column indices (one draw per row, as ALBEF), or ``(B, num_samples)``
    independent draws (with replacement) when ``num_samples`` is given.
    """
    probabilities = hard_negative_probabilities(similarity)
    if num_samples is None:
        return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)  # (B,)
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return torch.multinomial(probabilities, num_samples, replacement=True, generator=generator)  # (B, S)


def build_itm_pairs(
    similarity: torch.Tensor, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3B (image, text, label) pairs of an ALBEF ITM batch from the image-to-text similarity.

    Returns ``(image_index, text_index, labels)``, each ``(3B,)``: first the B matched pairs ``(i, i, 1)``,
    then each image with a hard negative text ``(i, j, 0)``, then each text with a hard negative image
    ``(j', i, 0)`` drawn from the column ``sim[:, i]``.
    """
    batch = similarity.shape[0] if isinstance(similarity, torch.Tensor) else 0
    negative_texts = sample_hard_negatives(similarity, generator=generator)  # (B,) a text for each image
    negative_images = sample_hard_negatives(similarity.T, generator=generator)  # (B,) an image for each text
    own = torch.arange(batch, device=similarity.device)
    image_index = torch.cat([own, own, negative_images])
    text_index = torch.cat([own, negative_texts, own])
    labels = torch.cat([torch.ones(batch, dtype=torch.long), torch.zeros(2 * batch, dtype=torch.long)])
    return image_index, text_index, labels.to(similarity.device)


class ImageTextMatchingHead(nn.Module):
    """``Linear(hidden_size, 2)`` over the fused [CLS] representation; logit 1 = matched."""

    def __init__(self, hidden_size: int):
        super().__init__()
        if not (isinstance(hidden_size, int) and hidden_size >= 1):
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        self.hidden_size = hidden_size
        self.classifier = nn.Linear(hidden_size, 2)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """``fused``: ``(P, hidden_size)`` (the [CLS] output per pair) -> ``(P, 2)`` logits."""
        if not isinstance(fused, torch.Tensor) or fused.dim() != 2 or fused.shape[1] != self.hidden_size:
            shape = tuple(fused.shape) if isinstance(fused, torch.Tensor) else type(fused).__name__
            raise ValueError(f"fused must have shape (P, hidden_size={self.hidden_size}), got {shape}")
        return self.classifier(fused)

    def loss(self, fused: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the matched (1) / unmatched (0) decision."""
        logits = self(fused)
        if not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:1] or labels.is_floating_point():
            raise ValueError(f"labels must be an integer tensor of shape (P,) = ({logits.shape[0]},)")
        if ((labels != 0) & (labels != 1)).any():
            raise ValueError("labels must be 0 (unmatched) or 1 (matched)")
        return F.cross_entropy(logits, labels.long())



# --------------------------------------------------------------------------------------------------
# The fusion encoder: text attending to image patches (ALBEF / BLIP)
# --------------------------------------------------------------------------------------------------


@dataclass
class FusionTextConfig:
    """The text encoder; names and defaults (BERT-base) follow ``transformers.BlipTextConfig``."""

    vocab_size: int = 30524
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self):
        check_divisible("hidden_size", self.hidden_size, "num_attention_heads", self.num_attention_heads)
        check_choice("hidden_act", self.hidden_act, ACTIVATIONS)


@dataclass
class ImageTextMatchingConfig:
    text: FusionTextConfig = field(default_factory=FusionTextConfig)
    vision: ViTConfig = field(default_factory=lambda: ViTConfig(image_size=384, layer_norm_eps=1e-5))
    embed_dim: int = 256  # the contrastive space (BLIP's image_text_hidden_size)
    init_temperature: float = 0.07  # tau of the contrastive similarity the hard negatives are drawn from
    backend: str = "reference"  # the attention seam's backend, for the ViT and the text encoder alike


class FusionEncoderLayer(nn.Module):
    """Self-attention, cross-attention to the image (skipped without one), feed-forward; post-norm around each.

    Shapes:
        x ``(B, N, D)``; image ``(B, M, Dv)`` or None; key_padding_mask ``(B, N)`` (True = padding) -> ``(B, N, D)``.
    """

    def __init__(self, config: FusionTextConfig, image_dim: int, backend: str = "reference"):
        super().__init__()
        d, heads, eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps
        self.self_attn = MultiHeadAttention(d, heads, backend=backend)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.cross_attn = MultiHeadAttention(d, heads, kv_dim=image_dim, backend=backend)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.feed_forward = FeedForward(d, config.intermediate_size, config.hidden_act)
        self.norm3 = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None, *,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, key_padding_mask=key_padding_mask))
        if image is not None:
            x = self.norm2(x + self.cross_attn(x, image))  # (B, N, D): every patch is real, nothing to mask
        return self.norm3(x + self.feed_forward(x))


class FusionTextEncoder(nn.Module):
    """Word + position embeddings, LayerNorm, fusion layers: ``(B, N) ids [+ (B, M, Dv) image] -> (B, N, D)``."""

    def __init__(self, config: FusionTextConfig, image_dim: int, backend: str = "reference"):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(FusionEncoderLayer(config, image_dim, backend)
                                    for _ in range(config.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                image: torch.Tensor | None = None) -> torch.Tensor:
        config = self.config
        check_token_ids("input_ids", input_ids, config.vocab_size, max_length=config.max_position_embeddings,
                        length_limit="max_position_embeddings")
        padding = None
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask must have the shape of input_ids (B, N) = {tuple(input_ids.shape)}")
            if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
                raise ValueError("attention_mask must hold only 1 (real token) and 0 (padding)")
            if not bool(attention_mask.bool().any(dim=1).all()):
                raise ValueError("attention_mask must mark at least one real token (a 1) in every row")
            padding = attention_mask == 0  # (B, N), True = padding
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (N,)
        x = self.norm(self.word_embeddings(input_ids) + self.position_embeddings(positions))  # (B, N, D)
        for layer in self.layers:
            x = layer(x, image, key_padding_mask=padding)
        return x


class ImageTextMatchingModel(nn.Module):
    """ViT + fusion text encoder + ITM head, with the contrastive projections that supply hard negatives.

    Shapes:
        pixel_values ``(B, C, H, W)``; input_ids, attention_mask ``(B, N)`` ->
        :meth:`itm_logits` ``(B, 2)`` (class 1 = matched), :meth:`contrastive_similarity` ``(B, B)`` cosines.
    """

    def __init__(self, config: ImageTextMatchingConfig):
        super().__init__()
        if not (isinstance(config.init_temperature, (int, float)) and config.init_temperature > 0):
            raise ValueError(f"init_temperature must be a positive number, got {config.init_temperature!r}")
        self.config = config
        vision = dataclasses.replace(config.vision, pooler=False, backend=config.backend)  # tokens, final LayerNorm
        self.vision_model = VisionTransformer(vision)
        self.text_encoder = FusionTextEncoder(config.text, vision.hidden_size, config.backend)
        self.vision_proj = nn.Linear(vision.hidden_size, config.embed_dim)
        self.text_proj = nn.Linear(config.text.hidden_size, config.embed_dim)
        self.itm_head = ImageTextMatchingHead(config.text.hidden_size)
        self.temperature = nn.Parameter(torch.tensor(float(config.init_temperature)))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 1 + P, Dv)``: the patch features the text attends to."""
        return self.vision_model(pixel_values).last_hidden_state

    def contrastive_similarity(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                               attention_mask: torch.Tensor | None = None, *,
                               image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """``(B_images, B_texts)`` cosines of the projected image [CLS] and the unimodal text's first token."""
        if image_embeds is None:
            image_embeds = self.encode_image(pixel_values)  # (Bi, 1 + P, Dv)
        image = F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)  # (Bi, E)
        text = F.normalize(self.text_proj(self.text_encoder(input_ids, attention_mask)[:, 0]), dim=-1)  # (Bt, E)
        return image @ text.T

    def itm_logits(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, *, image_embeds: torch.Tensor | None = None):
        """``(B, 2)``: pair i is (image i, text i). ``image_embeds`` (from :meth:`encode_image`) skips the ViT."""
        if image_embeds is None:
            image_embeds = self.encode_image(pixel_values)  # (B, 1 + P, Dv)
        if image_embeds.shape[0] != input_ids.shape[0]:
            raise ValueError(f"pixel_values must hold one image per text: B = {input_ids.shape[0]}, "
                             f"got {image_embeds.shape[0]}")
        fused = self.text_encoder(input_ids, attention_mask, image_embeds)  # (B, N, D)
        return self.itm_head(fused[:, 0])

    def itm_loss(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """ALBEF's ITM loss on B positives and 2B hard negatives mined from ``s / tau`` (no gradient through it).

        Returns ``(loss, (image_index, text_index, labels))``, the pairs as :func:`build_itm_pairs` drew them.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        image_embeds = self.encode_image(pixel_values)  # (B, 1 + P, Dv), shared by every pair
        with torch.no_grad():
            similarity = self.contrastive_similarity(None, input_ids, attention_mask,
                                                     image_embeds=image_embeds) / self.temperature  # (B, B)
        pairs = build_itm_pairs(similarity, generator=generator)
        image_index, text_index, labels = pairs
        logits = self.itm_logits(None, input_ids[text_index], attention_mask[text_index],
                                 image_embeds=image_embeds[image_index])  # (3B, 2)
        return F.cross_entropy(logits, labels), pairs

    @torch.no_grad()
    def copy_from_transformers(self, theirs) -> ImageTextMatchingModel:
        """Load the weights of a ``transformers.BlipForImageTextRetrieval`` built from the matching config."""
        vision, their_vision = self.vision_model, theirs.vision_model
        if len(vision.encoder.layers) != len(their_vision.encoder.layers) or \
                len(self.text_encoder.layers) != len(theirs.text_encoder.encoder.layer):
            raise ValueError("copy_from_transformers: the number of layers differs")
        embeddings = their_vision.embeddings
        vision.patch_embedding.projection.load_state_dict(embeddings.patch_embedding.state_dict())
        vision.cls_token.copy_(embeddings.class_embedding)
        vision.position_embeddings.copy_(embeddings.position_embedding)
        for ours, layer in zip(vision.encoder.layers, their_vision.encoder.layers, strict=True):
            attention = ours.self_attn
            for proj, weight, bias in zip((attention.q_proj, attention.k_proj, attention.v_proj),
                                          layer.self_attn.qkv.weight.chunk(3), layer.self_attn.qkv.bias.chunk(3),
                                          strict=True):  # BLIP packs (q, k, v) along the output rows
                proj.weight.copy_(weight)
                proj.bias.copy_(bias)
            attention.out_proj.load_state_dict(layer.self_attn.projection.state_dict())
            ours.norm1.load_state_dict(layer.layer_norm1.state_dict())
            ours.norm2.load_state_dict(layer.layer_norm2.state_dict())
            ours.feed_forward.linear1.load_state_dict(layer.mlp.fc1.state_dict())
            ours.feed_forward.linear2.load_state_dict(layer.mlp.fc2.state_dict())
        vision.encoder.norm.load_state_dict(their_vision.post_layernorm.state_dict())

        text, their_text = self.text_encoder, theirs.text_encoder
        text.word_embeddings.load_state_dict(their_text.embeddings.word_embeddings.state_dict())
        text.position_embeddings.load_state_dict(their_text.embeddings.position_embeddings.state_dict())
        text.norm.load_state_dict(their_text.embeddings.LayerNorm.state_dict())
        for ours, layer in zip(text.layers, their_text.encoder.layer, strict=True):
            for attention, their_attention, norm in ((ours.self_attn, layer.attention, ours.norm1),
                                                     (ours.cross_attn, layer.crossattention, ours.norm2)):
                for mine, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
                    getattr(attention, mine).load_state_dict(getattr(their_attention.self, name).state_dict())
                attention.out_proj.load_state_dict(their_attention.output.dense.state_dict())
                norm.load_state_dict(their_attention.output.LayerNorm.state_dict())
            ours.feed_forward.linear1.load_state_dict(layer.intermediate.dense.state_dict())
            ours.feed_forward.linear2.load_state_dict(layer.output.dense.state_dict())
            ours.norm3.load_state_dict(layer.output.LayerNorm.state_dict())
        self.vision_proj.load_state_dict(theirs.vision_proj.state_dict())
        self.text_proj.load_state_dict(theirs.text_proj.state_dict())
        self.itm_head.classifier.load_state_dict(theirs.itm_head.state_dict())
        return self
