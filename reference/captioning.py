"""Cross-modal transfer by prefix captioning (seed section 22).

ClipCap (Mokady et al. 2021, "ClipCap: CLIP Prefix for Image Captioning"): a mapping network turns an image
embedding (from a frozen vision encoder such as CLIP) into a *prefix* of ``P`` vectors in the language model's
input-embedding space; the decoder reads the prefix as if it were ``P`` prompt tokens and continues with the
caption. What transfers across modalities is the decoder's knowledge of language; the mapping learns to speak
to it.

    prefix = reshape(W_2 tanh(W_1 v + b_1) + b_2, (P, E))           the MLP mapping network (paper, section 3.2)
    p(c_t | v, c_<t) = DecoderLM([prefix; embed(c_<t)])[P - 1 + t]   next-token prediction after the prefix

Training minimizes the cross-entropy of the caption tokens only: the prefix positions predict nothing (the
logit at the prefix's last position predicts the first caption token). Captioning decodes greedily from the
prefix alone. The decoder is :class:`reference.generation.DecoderLM`, so attention goes through its
``backend=``. ClipCap also describes a transformer mapping network used with a frozen GPT-2; this reference
implements the MLP mapping (the variant that fine-tunes the decoder). To keep the decoder frozen, call
``captioner.decoder.requires_grad_(False)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reference._validation import check_positive_int
from reference.generation import DecoderLM

__all__ = ["PrefixCaptionerConfig", "PrefixCaptioner", "caption_loss"]


def caption_loss(logits: torch.Tensor, captions: torch.Tensor, caption_mask: torch.Tensor | None = None, *,
                 given: int = 0) -> torch.Tensor:
    """Mean cross-entropy (nats per token) of the caption tokens after the first ``given`` ones (a start token
    is given, not predicted), over the tokens ``caption_mask`` marks with 1 (every token when it is None).

    Shapes:
        logits ``(B, L - given, V)``: entry ``t`` predicts ``captions[:, given + t]``; captions and caption_mask
        ``(B, L)``.
    """
    token_losses = F.cross_entropy(logits.transpose(1, 2), captions[:, given:], reduction="none")  # (B, L - given)
    if caption_mask is None:
        return token_losses.mean()
    if tuple(caption_mask.shape) != tuple(captions.shape):
        raise ValueError(f"caption_mask must have the shape of captions {tuple(captions.shape)}, "
                         f"got {tuple(caption_mask.shape)}")
    keep = caption_mask[:, given:].bool()
    if not keep.any():
        raise ValueError(f"caption_mask must mark at least one token to predict (at position {given} or later)")
    return token_losses[keep].mean()


@dataclass
class PrefixCaptionerConfig:
    image_dim: int  # the size of the image embedding (512 for CLIP ViT-B/32)
    prefix_length: int = 10  # P, the number of decoder input vectors the image becomes
    hidden_dim: int | None = None  # the mapping MLP's width; default P * E // 2, as in ClipCap

    def __post_init__(self):
        for name in ("image_dim", "prefix_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_dim is not None and (not isinstance(self.hidden_dim, int) or self.hidden_dim < 1):
            raise ValueError(f"hidden_dim must be a positive integer or None, got {self.hidden_dim!r}")


class PrefixCaptioner(nn.Module):
    """An MLP mapping network from image embeddings to a decoder prefix, and the decoder that captions from it.

    Shapes:
        image_embeddings ``(B, image_dim)``; captions ``(B, L)`` int; caption_mask ``(B, L)``, 1 = token,
        0 = padding after the caption -> prefix ``(B, P, E)``, logits ``(B, L, V)``, captions ``(B, max_length)``.
    """

    def __init__(self, config: PrefixCaptionerConfig, decoder: DecoderLM):
        super().__init__()
        if not isinstance(decoder, DecoderLM):
            raise TypeError(f"decoder must be a reference.generation.DecoderLM, got {type(decoder).__name__}")
        if config.prefix_length >= decoder.config.context_length:
            raise ValueError(f"prefix_length ({config.prefix_length}) must be shorter than the decoder's "
                             f"context_length ({decoder.config.context_length})")
        self.config = config
        self.decoder = decoder
        d_model = decoder.config.d_model
        hidden = config.hidden_dim or config.prefix_length * d_model // 2
        self.mapping = nn.Sequential(
            nn.Linear(config.image_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, config.prefix_length * d_model),
        )

    def prefix(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, image_dim)`` -> ``(B, P, E)``: the image as ``P`` decoder input embeddings."""
        if not isinstance(image_embeddings, torch.Tensor) or not image_embeddings.is_floating_point():
            raise TypeError("image_embeddings must be a floating-point tensor of shape (B, image_dim)")
        if image_embeddings.dim() != 2 or image_embeddings.shape[1] != self.config.image_dim:
            raise ValueError(f"image_embeddings must have shape (B, image_dim) = (B, {self.config.image_dim}), "
                             f"got {tuple(image_embeddings.shape)}")
        batch = image_embeddings.shape[0]
        flat = self.mapping(image_embeddings)  # (B, P * E)
        return flat.view(batch, self.config.prefix_length, self.decoder.config.d_model)  # (B, P, E)

    def forward(self, image_embeddings: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """``(B, L, V)`` logits: entry ``t`` predicts caption token ``t`` from the image and tokens ``< t``."""
        self._check_captions(image_embeddings, captions)
        prefix = self.prefix(image_embeddings)  # (B, P, E)
        tokens = self.decoder.token_embedding(captions[:, :-1])  # (B, L - 1, E): the last token predicts nothing
        logits = self.decoder(inputs_embeds=torch.cat([prefix, tokens], dim=1))  # (B, P + L - 1, V)
        return logits[:, self.config.prefix_length - 1 :]  # (B, L, V): from the prefix's last position on

    def loss(self, image_embeddings: torch.Tensor, captions: torch.Tensor,
             caption_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy (nats per token) over the caption tokens where ``caption_mask`` is 1."""
        return caption_loss(self(image_embeddings, captions), captions, caption_mask)  # logits (B, L, V)

    @torch.no_grad()
    def caption(self, image_embeddings: torch.Tensor, max_length: int) -> torch.Tensor:
        """Greedy captions ``(B, max_length)``, decoded from the prefix alone with the decoder's KV cache."""
        check_positive_int("max_length", max_length)
        room = self.decoder.config.context_length - self.config.prefix_length
        if max_length > room:
            raise ValueError(f"max_length ({max_length}) must fit after the prefix: at most {room} tokens")
        prefix = self.prefix(image_embeddings)  # (B, P, E)
        empty = torch.empty(prefix.shape[0], 0, dtype=torch.long, device=prefix.device)  # no text prompt
        return self.decoder.generate(empty, max_length, prefix_embeds=prefix)

    def _check_captions(self, image_embeddings, captions) -> None:
        if not isinstance(captions, torch.Tensor) or captions.dtype not in (torch.int32, torch.int64):
            raise TypeError("captions must be an int32 or int64 tensor of token ids")
        if captions.dim() != 2 or captions.shape[1] < 1:
            raise ValueError(f"captions must have shape (B, L) with L >= 1, got {tuple(captions.shape)}")
        if isinstance(image_embeddings, torch.Tensor) and image_embeddings.shape[:1] != captions.shape[:1]:
            raise ValueError(f"captions must have the batch size of image_embeddings ({image_embeddings.shape[0]}), "
                             f"got {captions.shape[0]}")
        room = self.decoder.config.context_length - self.config.prefix_length + 1  # the last token is not fed
        if captions.shape[1] > room:
            raise ValueError(f"captions: length {captions.shape[1]} does not fit after the prefix of "
                             f"{self.config.prefix_length} in the context_length {self.decoder.config.context_length}")
