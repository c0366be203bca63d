"""Transformer encoder and decoder layers and stacks (seed section 5).

Vaswani et al. 2017, "Attention Is All You Need", section 3.1. Each sub-layer is wrapped in a
residual connection and layer normalization, in one of two placements:

    post-norm (the paper, BERT):     x = LayerNorm(x + Sublayer(x))
    pre-norm  (GPT-2, ViT, most LLMs): x = x + Sublayer(LayerNorm(x))

An encoder layer has two sub-layers (self-attention, feed-forward); a decoder layer has three
(causal self-attention, cross-attention to the encoder's output "memory", feed-forward).
Attribute names follow ``torch.nn.TransformerEncoderLayer`` (``self_attn``, ``linear1``, ``norm1`` ...)
so weights map one to one. Dropout is left out: the reference is the deterministic function.

Attention goes through :class:`reference.attention.MultiHeadAttention` and so through the one
``backend=`` seam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reference.attention import MultiHeadAttention

__all__ = ["FeedForward", "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
           "TransformerDecoder", "ACTIVATIONS"]

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact, erf-based (BERT, ViT, torch's "gelu")
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # CLIP's sigmoid approximation of GELU
}


def _activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


class FeedForward(nn.Module):
    """Position-wise feed-forward network: ``linear2(act(linear1(x)))``, ``(B, N, E) -> (B, N, E)``."""

    def __init__(self, d_model: int, dim_feedforward: int, activation: str = "relu", bias: bool = True):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.activation = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.activation(self.linear1(x)))


def _copy_feed_forward_and_norms(ours: nn.Module, theirs: nn.Module, norms: tuple[str, ...]) -> None:
    ours.feed_forward.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.feed_forward.linear2.load_state_dict(theirs.linear2.state_dict())
    for name in norms:
        getattr(ours, name).load_state_dict(getattr(theirs, name).state_dict())


class TransformerEncoderLayer(nn.Module):
    """Self-attention then feed-forward, each with a residual and a LayerNorm (pre- or post-norm).

    Shapes:
        x ``(B, N, E)``; key_padding_mask ``(B, N)`` bool, True = padding; -> ``(B, N, E)``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, *, activation: str = "relu",
                 norm_first: bool = False, layer_norm_eps: float = 1e-5, num_kv_heads: int | None = None,
                 bias: bool = True, backend: str = "reference"):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, nhead, num_kv_heads=num_kv_heads, bias=bias, backend=backend)
        self.feed_forward = FeedForward(d_model, dim_feedforward, activation, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)

    @torch.no_grad()
    def copy_from_torch(self, theirs: nn.TransformerEncoderLayer) -> TransformerEncoderLayer:
        """Load the weights of a ``torch.nn.TransformerEncoderLayer`` with the same configuration."""
        self.self_attn.copy_from_torch(theirs.self_attn)
        _copy_feed_forward_and_norms(self, theirs, norms=("norm1", "norm2"))
        return self

    def forward(self, x: torch.Tensor, *, attn_mask=None, key_padding_mask=None, is_causal: bool = False,
                kv_cache: dict | None = None) -> torch.Tensor:
        attend = lambda h: self.self_attn(h, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                          is_causal=is_causal, kv_cache=kv_cache)
        if self.norm_first:
            x = x + attend(self.norm1(x))
            return x + self.feed_forward(self.norm2(x))
        x = self.norm1(x + attend(x))
        return self.norm2(x + self.feed_forward(x))


class TransformerDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to ``memory``, feed-forward; residual + LayerNorm around each.

    Shapes:
        x ``(B, Nt, E)``; memory ``(B, Ns, E)``; memory_key_padding_mask ``(B, Ns)``;
        tgt_key_padding_mask ``(B, Nt)``; -> ``(B, Nt, E)``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, *, activation: str = "relu",
                 norm_first: bool = False, layer_norm_eps: float = 1e-5, bias: bool = True,
                 backend: str = "reference"):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, nhead, bias=bias, backend=backend)
        self.cross_attn = MultiHeadAttention(d_model, nhead, bias=bias, backend=backend)
        self.feed_forward = FeedForward(d_model, dim_feedforward, activation, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps)

    @torch.no_grad()
    def copy_from_torch(self, theirs: nn.TransformerDecoderLayer) -> TransformerDecoderLayer:
        """Load the weights of a ``torch.nn.TransformerDecoderLayer`` with the same configuration."""
        self.self_attn.copy_from_torch(theirs.self_attn)
        self.cross_attn.copy_from_torch(theirs.multihead_attn)
        _copy_feed_forward_and_norms(self, theirs, norms=("norm1", "norm2", "norm3"))
        return self

    def forward(self, x: torch.Tensor, memory: torch.Tensor, *, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, is_causal: bool = True) -> torch.Tensor:
        attend_self = lambda h: self.self_attn(h, key_padding_mask=tgt_key_padding_mask, is_causal=is_causal)
        attend_memory = lambda h: self.cross_attn(h, memory, key_padding_mask=memory_key_padding_mask)
        if self.norm_first:
            x = x + attend_self(self.norm1(x))
            x = x + attend_memory(self.norm2(x))
            return x + self.feed_forward(self.norm3(x))
        x = self.norm1(x + attend_self(x))
        x = self.norm2(x + attend_memory(x))
        return self.norm3(x + self.feed_forward(x))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers, with an optional final LayerNorm (used with pre-norm layers)."""

    def __init__(self, layer_factory, num_layers: int, final_norm: nn.Module | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layer_factory() for _ in range(num_layers))
        self.norm = final_norm

    def forward(self, x: torch.Tensor, **masks) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, **masks)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(nn.Module):
    """A stack of decoder layers, each attending to the same encoder ``memory``."""

    def __init__(self, layer_factory, num_layers: int, final_norm: nn.Module | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layer_factory() for _ in range(num_layers))
        self.norm = final_norm

    def forward(self, x: torch.Tensor, memory: torch.Tensor, **masks) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory, **masks)
        return x if self.norm is None else self.norm(x)
