"""Single-stream vision-language encoder and its pre-training objectives: VisualBERT (seed section 6).

Li et al. 2019, "VisualBERT: A Simple and Performant Baseline for Vision and Language". Text tokens and
visual region features (from an object detector) are embedded separately and concatenated into one
sequence for a BERT encoder, so self-attention mixes the two modalities in every layer:

    text:   e_i = W_word[t_i] + W_type[s_i] + W_pos[i]                          i = 0 .. Nt - 1
    visual: f_j = W_proj v_j + b + W_vtype[s'_j] + W_vpos[0]                    j = 0 .. Nv - 1
    h_0 = LayerNorm([e_0 .. e_{Nt-1}; f_0 .. f_{Nv-1}])                         (B, Nt + Nv, D)
    h_l = BertLayer(h_{l-1})   post-norm: LN(x + MHA(x)), LN(x + FFN(x)), GELU
    pooled = tanh(W h_L^0 + b)                                                  the first text token

Regions carry no order, so every region gets visual position 0 (VisualBERT's default without an explicit
image-text alignment); token types default to 0 for text and 1 for regions. Padding on either side is
masked out of every key set (``attention_mask`` for text, ``visual_attention_mask`` for regions; 1 or
True = a real token, as in transformers), but padded positions still produce outputs.

The layers are :class:`reference.transformer.TransformerEncoderLayer` (post-norm, ``gelu``), so attention
goes through the ``backend=`` seam of :mod:`reference.attention`.

**Pre-training** (section 3.3 of the paper, :class:`VisualBertForPreTraining`), on image-caption pairs:

* masked language modelling *with the image*: text tokens are masked as in BERT (:func:`reference.bert.mask_tokens`)
  and predicted from the other text tokens and every region; regions are never masked nor predicted, so the
  labels cover the text positions only:
  ``logits = LayerNorm(gelu(W_t h + b_t)) W_word^T + b``  (the word embeddings, tied), ``CE(logits[:, :Nt], labels)``;
* sentence-image prediction: the text holds two captions; is the second one about the image too? A two-way
  classifier over the pooled first token, ``CE(W_s pooled + b_s, y)`` with ``y = 0`` matching, ``1`` random.

The total loss is their sum, as ``transformers.VisualBertForPreTraining`` computes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from reference._validation import check_divisible, check_token_id, check_token_ids
from reference.bert import IGNORE_INDEX, MaskedLMHead, masked_lm_loss, next_sentence_loss
from reference.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = ["VisualBertConfig", "VisualBertEmbeddings", "VisualBertEncoder", "VisualBertOutput",
           "VisualBertPreTrainingOutput", "VisualBertForPreTraining"]


@dataclass
class VisualBertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    visual_embedding_dim: int = 512  # the detector's region feature size
    hidden_act: str = "gelu"  # the feed-forward and MLM-head activation (exact GELU, as BERT)
    pad_token_id: int = 1  # transformers' VisualBertConfig default: that word embedding never receives a gradient
    layer_norm_eps: float = 1e-12
    backend: str = "reference"

    def __post_init__(self):
        check_divisible("hidden_size", self.hidden_size, "num_heads", self.num_heads)
        check_token_id("pad_token_id", self.pad_token_id, self.vocab_size)


class VisualBertEmbeddings(nn.Module):
    """Text and region embeddings, concatenated and normalized: ``-> (B, Nt + Nv, D)``."""

    def __init__(self, config: VisualBertConfig):
        super().__init__()
        d = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.visual_projection = nn.Linear(config.visual_embedding_dim, d)
        self.visual_position_embeddings = nn.Embedding(config.max_position_embeddings, d)
        self.visual_token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, input_ids, visual_embeds, token_type_ids, visual_token_type_ids) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (Nt,)
        text = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
                + self.position_embeddings(positions))  # (B, Nt, D)
        region_positions = torch.zeros(visual_embeds.shape[:2], dtype=torch.long, device=visual_embeds.device)
        visual = (self.visual_projection(visual_embeds) + self.visual_token_type_embeddings(visual_token_type_ids)
                  + self.visual_position_embeddings(region_positions))  # (B, Nv, D)
        return self.norm(torch.cat([text, visual], dim=1))  # (B, Nt + Nv, D)


class VisualBertOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, Nt + Nv, D): text positions first, then regions
    pooler_output: torch.Tensor  # (B, D)


def _keep_mask(mask, name: str, shape: tuple[int, int], device) -> torch.Tensor:
    """A (B, N) bool mask, True = real token, from None (all real) or a 0/1 (bool, int or float) mask."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != shape:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must have shape (B, N) = {shape}, got {got}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"{name} must hold only 0 (padding) and 1 (real token)")
    return mask.bool()


def _token_types(ids, name: str, default: int, shape: tuple[int, int], type_vocab_size: int, device):
    if ids is None:
        return torch.full(shape, default, dtype=torch.long, device=device)
    check_token_ids(name, ids, type_vocab_size, shape=shape)
    return ids


class VisualBertEncoder(nn.Module):
    """VisualBERT: one BERT encoder over [text tokens; projected regions].

    Shapes:
        input_ids ``(B, Nt)`` int; visual_embeds ``(B, Nv, visual_embedding_dim)``;
        attention_mask ``(B, Nt)``, visual_attention_mask ``(B, Nv)`` (1 = real, 0 = padding);
        token_type_ids ``(B, Nt)``, visual_token_type_ids ``(B, Nv)``
        -> last_hidden_state ``(B, Nt + Nv, D)``, pooler_output ``(B, D)``.
    """

    def __init__(self, config: VisualBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = VisualBertEmbeddings(config)
        self.encoder = TransformerEncoder(
            lambda: TransformerEncoderLayer(config.hidden_size, config.num_heads, config.intermediate_size,
                                            activation=config.hidden_act, norm_first=False,
                                            layer_norm_eps=config.layer_norm_eps,
                                            backend=config.backend),
            config.num_layers,
        )
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)

    def _validate(self, input_ids, visual_embeds) -> None:
        config = self.config
        check_token_ids("input_ids", input_ids, config.vocab_size, max_length=config.max_position_embeddings,
                        length_limit="max_position_embeddings")
        if not isinstance(visual_embeds, torch.Tensor) or not visual_embeds.is_floating_point():
            raise TypeError("visual_embeds must be a floating-point tensor of shape (B, Nv, visual_embedding_dim)")
        expected = (input_ids.shape[0], config.visual_embedding_dim)
        if visual_embeds.dim() != 3 or (visual_embeds.shape[0], visual_embeds.shape[2]) != expected:
            raise ValueError(f"visual_embeds must have shape (B, Nv, visual_embedding_dim) = "
                             f"({expected[0]}, Nv, {expected[1]}), got {tuple(visual_embeds.shape)}")

    def forward(self, input_ids: torch.Tensor, visual_embeds: torch.Tensor, *,
                attention_mask: torch.Tensor | None = None, visual_attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                visual_token_type_ids: torch.Tensor | None = None) -> VisualBertOutput:
        self._validate(input_ids, visual_embeds)
        (b, nt), nv, device = input_ids.shape, visual_embeds.shape[1], input_ids.device
        types = self.config.type_vocab_size
        token_type_ids = _token_types(token_type_ids, "token_type_ids", 0, (b, nt), types, device)
        visual_token_type_ids = _token_types(visual_token_type_ids, "visual_token_type_ids", 1, (b, nv), types,
                                             device)
        keep = torch.cat([_keep_mask(attention_mask, "attention_mask", (b, nt), device),
                          _keep_mask(visual_attention_mask, "visual_attention_mask", (b, nv), device)], dim=1)
        if not keep.any(dim=1).all():
            raise ValueError("attention_mask and visual_attention_mask leave a sequence with no real token")

        hidden = self.embeddings(input_ids, visual_embeds, token_type_ids, visual_token_type_ids)  # (B, Nt+Nv, D)
        hidden = self.encoder(hidden, key_padding_mask=~keep)  # (B, Nt + Nv, D)
        pooled = torch.tanh(self.pooler(hidden[:, 0]))  # (B, D)
        return VisualBertOutput(hidden, pooled)

    @torch.no_grad()
    def copy_from_transformers(self, theirs) -> VisualBertEncoder:
        """Load the weights of a ``transformers.VisualBertModel`` (no ``bypass_transformer``)."""
        if len(theirs.encoder.layer) != len(self.encoder.layers):
            raise ValueError(f"copy_from_transformers: {len(theirs.encoder.layer)} layers there, "
                             f"{len(self.encoder.layers)} here")
        if theirs.pooler is None or getattr(theirs, "bypass_transformer", False):
            raise ValueError("copy_from_transformers: needs a pooler and bypass_transformer=False")
        source, ours = theirs.embeddings, self.embeddings
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "visual_projection",
                     "visual_position_embeddings", "visual_token_type_embeddings"):
            getattr(ours, name).load_state_dict(getattr(source, name).state_dict())
        ours.norm.load_state_dict(source.LayerNorm.state_dict())
        for layer, bert in zip(self.encoder.layers, theirs.encoder.layer, strict=True):
            attention = bert.attention
            for mine, proj in (("q_proj", attention.self.query), ("k_proj", attention.self.key),
                               ("v_proj", attention.self.value), ("out_proj", attention.output.dense)):
                getattr(layer.self_attn, mine).load_state_dict(proj.state_dict())
            layer.norm1.load_state_dict(attention.output.LayerNorm.state_dict())
            layer.feed_forward.linear1.load_state_dict(bert.intermediate.dense.state_dict())
            layer.feed_forward.linear2.load_state_dict(bert.output.dense.state_dict())
            layer.norm2.load_state_dict(bert.output.LayerNorm.state_dict())
        self.pooler.load_state_dict(theirs.pooler.dense.state_dict())
        return self


# --------------------------------------------------------------------------------------------------
# Pre-training: masked language modelling with the image, sentence-image prediction
# --------------------------------------------------------------------------------------------------


@dataclass
class VisualBertPreTrainingOutput:
    """What :class:`VisualBertForPreTraining` returns; the losses are None unless their labels were given."""

    prediction_logits: torch.Tensor  # (B, Nt + Nv, V): every position, as transformers; the loss reads the text
    seq_relationship_logits: torch.Tensor  # (B, 2): class 0 = the second caption matches the image
    hidden_states: torch.Tensor  # (B, Nt + Nv, D)
    pooled: torch.Tensor  # (B, D)
    mlm_loss: torch.Tensor | None = None
    sentence_image_loss: torch.Tensor | None = None
    loss: torch.Tensor | None = None  # mlm_loss + sentence_image_loss, or mlm_loss alone without the second label


class VisualBertForPreTraining(nn.Module):
    """The VisualBERT encoder with its two pre-training heads; given labels, also the pre-training loss.

    Args of ``forward`` (besides :class:`VisualBertEncoder`'s):
        labels: int ``(B, Nt)``: the original token at each masked text position, ``-100`` elsewhere
            (regions are never targets, so they have no labels).
        sentence_image_labels: int ``(B,)``: 0 = the text matches the image, 1 = its second caption is random.
    """

    def __init__(self, config: VisualBertConfig):
        super().__init__()
        self.config = config
        self.visual_bert = VisualBertEncoder(config)
        self.mlm = MaskedLMHead(config, self.visual_bert.embeddings.word_embeddings)
        self.sentence_image = nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids: torch.Tensor, visual_embeds: torch.Tensor, *,
                labels: torch.Tensor | None = None, sentence_image_labels: torch.Tensor | None = None,
                **encoder_inputs) -> VisualBertPreTrainingOutput:
        hidden, pooled = self.visual_bert(input_ids, visual_embeds, **encoder_inputs)  # (B, Nt + Nv, D), (B, D)
        if labels is not None:
            check_token_ids("labels", labels, self.config.vocab_size, shape=tuple(input_ids.shape), ignore=IGNORE_INDEX)
        if sentence_image_labels is not None:
            check_token_ids("sentence_image_labels", sentence_image_labels, 2, shape=(input_ids.shape[0],))
        out = VisualBertPreTrainingOutput(self.mlm(hidden), self.sentence_image(pooled), hidden, pooled)
        if labels is not None:
            text_logits = out.prediction_logits[:, : input_ids.shape[1]]  # (B, Nt, V): the regions are not targets
            out.mlm_loss = out.loss = masked_lm_loss(text_logits, labels)
        if sentence_image_labels is not None:
            out.sentence_image_loss = next_sentence_loss(out.seq_relationship_logits, sentence_image_labels)
            if out.mlm_loss is not None:
                out.loss = out.mlm_loss + out.sentence_image_loss
        return out

    @torch.no_grad()
    def copy_from_transformers(self, theirs) -> VisualBertForPreTraining:
        """Load the weights of a ``transformers.VisualBertForPreTraining`` (its decoder tied to the word embeddings)."""
        predictions = theirs.cls.predictions
        if (predictions.decoder.weight is not theirs.visual_bert.embeddings.word_embeddings.weight
                or predictions.decoder.bias is not predictions.bias):
            raise ValueError("copy_from_transformers: the MLM decoder there is not tied to the word embeddings "
                             "and the output bias")
        self.visual_bert.copy_from_transformers(theirs.visual_bert)
        self.mlm.dense.load_state_dict(predictions.transform.dense.state_dict())
        self.mlm.norm.load_state_dict(predictions.transform.LayerNorm.state_dict())
        self.mlm.bias.copy_(predictions.bias)
        self.sentence_image.load_state_dict(theirs.cls.seq_relationship.state_dict())
        return self
