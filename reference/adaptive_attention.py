"""Adaptive attention with a visual sentinel (seed section 23).

Lu, Xiong, Parikh, Socher 2017, "Knowing When to Look: Adaptive Attention via a Visual Sentinel for Image
Captioning", section 2.3. A captioning decoder does not need the image for every word ("of", "the"), so at
each step the model chooses between the image regions and a *visual sentinel*, a vector the LSTM keeps
in its memory of what it has already generated.

Sentinel (section 2.2), from the LSTM input ``x_t``, previous hidden state ``h_{t-1}`` and memory cell ``m_t``:

    g_t = sigmoid(W_x x_t + W_h h_{t-1})        s_t = g_t * tanh(m_t)

Spatial attention over ``k`` regions ``V = [v_1 .. v_k]`` (2.1), and the sentinel scored the same way (2.3):

    z_t = w_h^T tanh(W_v V + (W_g h_t) 1^T)         (k,)    alpha_t = softmax(z_t)     c_t = sum_i alpha_ti v_i
    zs_t = w_h^T tanh(W_s s_t + W_g h_t)            scalar
    alpha_hat_t = softmax([z_t; zs_t])              (k + 1,)   beta_t = alpha_hat_t[k]   (the sentinel's weight)
    c_hat_t = beta_t s_t + (1 - beta_t) c_t

``beta_t`` is the gate: 0 means "look at the image" (plain soft attention), 1 means "use the sentinel".
It is computed as ``sigmoid(zs_t - logsumexp(z_t))``, which is the sentinel's weight in the extended
softmax without ever dividing by ``1 - beta_t``. The projections are affine (``W_v``, ``W_s`` carry biases,
as the authors' code does); ``w_h`` has none, since a shift of every score leaves the softmax unchanged.

Backends: the scores are *additive* (Bahdanau-style) attention, ``w^T tanh(a + b)``, not a dot product,
so this module does not go through :func:`reference.attention.scaled_dot_product_attention` and has no
``backend=`` argument; a fused kernel for it would be a kernel of its own.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["VisualSentinel", "AdaptiveAttention", "AdaptiveAttentionOutput"]


class VisualSentinel(nn.Module):
    """``s_t = sigmoid(W_x x_t + W_h h_{t-1}) * tanh(m_t)``: the LSTM's output gate, applied to its memory.

    Shapes:
        x ``(..., input_size)``, h_prev ``(..., hidden_size)``, memory ``(..., hidden_size)``
        -> ``(..., hidden_size)``.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_gate = nn.Linear(input_size, hidden_size)  # W_x (with the bias)
        self.hidden_gate = nn.Linear(hidden_size, hidden_size, bias=False)  # W_h

    def forward(self, x: torch.Tensor, h_prev: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        if h_prev.shape != memory.shape:
            raise ValueError(f"h_prev and memory must have one shape, got {tuple(h_prev.shape)} and "
                             f"{tuple(memory.shape)}")
        gate = torch.sigmoid(self.input_gate(x) + self.hidden_gate(h_prev))  # g_t
        return gate * torch.tanh(memory)


class AdaptiveAttentionOutput(NamedTuple):
    context: torch.Tensor  # c_hat: (B, T, D)
    alpha: torch.Tensor  # attention over the regions alone: (B, T, k)
    beta: torch.Tensor  # the sentinel gate: (B, T, 1), in [0, 1]


class AdaptiveAttention(nn.Module):
    """Spatial attention over ``k`` regions plus a visual sentinel, mixed by the gate ``beta``.

    Shapes:
        features ``(B, k, D)`` (the regions ``V``), hidden ``(B, T, D)`` (``h_t`` at T steps; ``(B, D)``
        for one step), sentinel like hidden, region_padding_mask ``(B, k)`` bool (True = padding)
        -> context ``(B, T, D)``, alpha ``(B, T, k)``, beta ``(B, T, 1)``; without a T axis in the input,
        none in the output.
    """

    def __init__(self, feature_dim: int, attention_dim: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.region_proj = nn.Linear(feature_dim, attention_dim)  # W_v
        self.hidden_proj = nn.Linear(feature_dim, attention_dim, bias=False)  # W_g
        self.sentinel_proj = nn.Linear(feature_dim, attention_dim)  # W_s
        self.score = nn.Linear(attention_dim, 1, bias=False)  # w_h

    def _validate(self, features, hidden, sentinel, region_padding_mask) -> None:
        for name, t in (("features", features), ("hidden", hidden), ("sentinel", sentinel)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor")
        if features.dim() != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(f"features must have shape (B, k, {self.feature_dim}), got {tuple(features.shape)}")
        if hidden.dim() != 3 or hidden.shape[0] != features.shape[0] or hidden.shape[-1] != self.feature_dim:
            raise ValueError(f"hidden must have shape (B, T, {self.feature_dim}) with B = {features.shape[0]}, "
                             f"got {tuple(hidden.shape)}")
        if sentinel.shape != hidden.shape:
            raise ValueError(f"sentinel must have the shape of hidden {tuple(hidden.shape)}, "
                             f"got {tuple(sentinel.shape)}")
        if region_padding_mask is not None:
            expected = tuple(features.shape[:2])
            if not isinstance(region_padding_mask, torch.Tensor) or region_padding_mask.dtype != torch.bool:
                raise TypeError("region_padding_mask must be a bool tensor (True = padding)")
            if tuple(region_padding_mask.shape) != expected:
                raise ValueError(f"region_padding_mask must have shape (B, k) = {expected}, "
                                 f"got {tuple(region_padding_mask.shape)}")
            if region_padding_mask.all(dim=1).any():
                raise ValueError("region_padding_mask leaves an image with no region")

    def forward(self, features: torch.Tensor, hidden: torch.Tensor, sentinel: torch.Tensor, *,
                region_padding_mask: torch.Tensor | None = None) -> AdaptiveAttentionOutput:
        one_step = isinstance(hidden, torch.Tensor) and hidden.dim() == 2
        if one_step:
            hidden = hidden[:, None]  # (B, 1, D)
            sentinel = sentinel[:, None] if isinstance(sentinel, torch.Tensor) else sentinel
        self._validate(features, hidden, sentinel, region_padding_mask)

        query = self.hidden_proj(hidden)  # W_g h_t: (B, T, A)
        region_keys = self.region_proj(features)  # W_v V: (B, k, A)
        z = self.score(torch.tanh(region_keys[:, None] + query[:, :, None])).squeeze(-1)  # (B, T, k)
        z_sentinel = self.score(torch.tanh(self.sentinel_proj(sentinel) + query))  # (B, T, 1)
        if region_padding_mask is not None:
            z = z.masked_fill(region_padding_mask[:, None, :], float("-inf"))

        alpha = torch.softmax(z, dim=-1)  # (B, T, k)
        beta = torch.sigmoid(z_sentinel - torch.logsumexp(z, dim=-1, keepdim=True))  # (B, T, 1)
        context = alpha @ features  # c_t: (B, T, D)
        context_hat = beta * sentinel + (1 - beta) * context  # (B, T, D)
        if one_step:
            return AdaptiveAttentionOutput(context_hat[:, 0], alpha[:, 0], beta[:, 0])
        return AdaptiveAttentionOutput(context_hat, alpha, beta)
