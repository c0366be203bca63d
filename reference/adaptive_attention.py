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

The caption decoder around it (section 2.4, :class:`AdaptiveCaptionDecoder`): region features ``a_i`` and
their mean ``a_g`` become ``v_i = ReLU(W_a a_i)`` and ``v_g = ReLU(W_b a_g)``; at step t the LSTM reads
``x_t = [w_t; v_g]`` (the previous word's embedding and the global image feature):

    i, f, o = sigmoid(W_i x + U_i h + b_i), ...   u = tanh(W_u x + U_u h + b_u)
    m_t = f * m_{t-1} + i * u                     h_t = o * tanh(m_t)                  (:class:`LSTMCell`)
    s_t = sentinel(x_t, h_{t-1}, m_t)             c_hat_t = AdaptiveAttention(V, h_t, s_t)
    p(w_{t+1}) = softmax(W_p (c_hat_t + h_t))

Training is teacher-forced: the ground-truth word ``t`` is the input at step t + 1, and the loss is the mean
cross-entropy of the caption's words after the first (the start token), padding excluded. Captioning decodes
greedily from the start token.

Backends: the scores are *additive* (Bahdanau-style) attention, ``w^T tanh(a + b)``, not a dot product,
so this module does not go through :func:`reference.attention.scaled_dot_product_attention` and has no
``backend=`` argument; a fused kernel for it would be a kernel of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VisualSentinel", "AdaptiveAttention", "AdaptiveAttentionOutput", "LSTMCell", "AdaptiveCaptionDecoder",
           "AdaptiveCaptionDecoderConfig"]


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


class LSTMCell(nn.Module):
    """One LSTM step (Hochreiter and Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    The gate rows are stacked in the order input, forget, cell candidate, output, and the parameters carry
    ``torch.nn.LSTMCell``'s names, so its state dict loads into ours and back.

    Shapes:
        x ``(B, input_size)``, state ``(h, m)`` each ``(B, hidden_size)`` -> ``(h_t, m_t)``.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = hidden_size**-0.5  # torch's initialization: U(-1/sqrt(H), 1/sqrt(H)) for every tensor
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, m = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh  # (B, 4H)
        i, f, u, o = gates.chunk(4, dim=-1)  # (B, H) each
        m = torch.sigmoid(f) * m + torch.sigmoid(i) * torch.tanh(u)  # the memory cell m_t
        h = torch.sigmoid(o) * torch.tanh(m)
        return h, m


@dataclass
class AdaptiveCaptionDecoderConfig:
    vocab_size: int
    feature_dim: int  # the size of each image region's feature a_i (2048 for a ResNet-152 grid in the paper)
    hidden_size: int = 512  # d: the LSTM's width, the projected regions' and the sentinel's
    embedding_dim: int = 256  # word embeddings
    attention_dim: int = 512  # the additive attention's inner width
    start_token: int = 0  # the token a caption begins with, and greedy decoding starts from

    def __post_init__(self):
        for name in ("vocab_size", "feature_dim", "hidden_size", "embedding_dim", "attention_dim"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.start_token, int) and 0 <= self.start_token < self.vocab_size):
            raise ValueError(f"start_token must be a token id in [0, {self.vocab_size}), got {self.start_token!r}")


class AdaptiveCaptionDecoder(nn.Module):
    """Lu et al.'s caption decoder: an LSTM whose output is mixed with the image by adaptive attention.

    Shapes:
        regions ``(B, k, feature_dim)``; captions ``(B, L)`` int starting with the start token; caption_mask
        ``(B, L)``, 1 = word, 0 = padding -> logits ``(B, L - 1, V)`` (entry t predicts word t + 1), beta
        ``(B, L - 1, 1)``; greedy captions ``(B, max_length)`` (the start token not included).
    """

    def __init__(self, config: AdaptiveCaptionDecoderConfig):
        super().__init__()
        self.config = c = config
        self.region_proj = nn.Linear(c.feature_dim, c.hidden_size)  # W_a
        self.global_proj = nn.Linear(c.feature_dim, c.hidden_size)  # W_b
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim)
        lstm_input = c.embedding_dim + c.hidden_size  # x_t = [w_t; v_g]
        self.lstm = LSTMCell(lstm_input, c.hidden_size)
        self.sentinel = VisualSentinel(lstm_input, c.hidden_size)
        self.attention = AdaptiveAttention(c.hidden_size, c.attention_dim)
        self.output = nn.Linear(c.hidden_size, c.vocab_size)  # W_p

    def encode(self, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, k, feature_dim)`` -> the projected regions ``V`` ``(B, k, d)`` and the global feature ``(B, d)``."""
        if not isinstance(regions, torch.Tensor) or not regions.is_floating_point():
            raise TypeError("regions must be a floating-point tensor of shape (B, k, feature_dim)")
        if regions.dim() != 3 or regions.shape[-1] != self.config.feature_dim or regions.shape[1] < 1:
            raise ValueError(f"regions must have shape (B, k, feature_dim) = (B, k, {self.config.feature_dim}), "
                             f"got {tuple(regions.shape)}")
        return torch.relu(self.region_proj(regions)), torch.relu(self.global_proj(regions.mean(dim=1)))

    def initial_state(self, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = regions.new_zeros(regions.shape[0], self.config.hidden_size)
        return zeros, zeros.clone()  # (h_0, m_0)

    def step(self, words: torch.Tensor, state, features: torch.Tensor, global_feature: torch.Tensor):
        """One decoding step from the previous words ``(B,)``: returns logits ``(B, V)``, beta ``(B, 1)``, state."""
        h_prev, _ = state
        x = torch.cat([self.embedding(words), global_feature], dim=-1)  # x_t: (B, E + d)
        h, m = self.lstm(x, state)
        s = self.sentinel(x, h_prev, m)  # (B, d)
        out = self.attention(features, h, s)  # one step: context (B, d), beta (B, 1)
        return self.output(out.context + h), out.beta, (h, m)

    def forward(self, regions: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: logits ``(B, L - 1, V)`` for words 1..L-1 and the gates ``(B, L - 1, 1)``."""
        self._check_captions(regions, captions)
        features, global_feature = self.encode(regions)
        state = self.initial_state(regions)
        logits, betas = [], []
        for t in range(captions.shape[1] - 1):
            step_logits, beta, state = self.step(captions[:, t], state, features, global_feature)
            logits.append(step_logits)
            betas.append(beta)
        return torch.stack(logits, dim=1), torch.stack(betas, dim=1)

    def loss(self, regions: torch.Tensor, captions: torch.Tensor,
             caption_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy (nats per word) of words 1..L-1 given the earlier ones, where the mask is 1."""
        logits, _ = self(regions, captions)  # (B, L - 1, V)
        token_losses = F.cross_entropy(logits.transpose(1, 2), captions[:, 1:], reduction="none")  # (B, L - 1)
        if caption_mask is None:
            return token_losses.mean()
        if tuple(caption_mask.shape) != tuple(captions.shape):
            raise ValueError(f"caption_mask must have the shape of captions {tuple(captions.shape)}, "
                             f"got {tuple(caption_mask.shape)}")
        keep = caption_mask[:, 1:].bool()
        if not keep.any():
            raise ValueError("caption_mask must mark at least one word after the start token")
        return token_losses[keep].mean()

    @torch.no_grad()
    def caption(self, regions: torch.Tensor, max_length: int) -> torch.Tensor:
        """Greedy captions ``(B, max_length)``: each word the argmax given the image and the words before it."""
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        features, global_feature = self.encode(regions)
        state = self.initial_state(regions)
        words = torch.full((regions.shape[0],), self.config.start_token, dtype=torch.long, device=regions.device)
        out = []
        for _ in range(max_length):
            logits, _, state = self.step(words, state, features, global_feature)
            words = logits.argmax(dim=-1)  # (B,)
            out.append(words)
        return torch.stack(out, dim=1)

    def _check_captions(self, regions, captions) -> None:
        if not isinstance(captions, torch.Tensor) or captions.dtype not in (torch.int32, torch.int64):
            raise TypeError("captions must be an int32 or int64 tensor of token ids")
        if captions.dim() != 2 or captions.shape[1] < 2:
            raise ValueError(f"captions must have shape (B, L) with L >= 2 (the start token and a word), "
                             f"got {tuple(captions.shape)}")
        if isinstance(regions, torch.Tensor) and regions.shape[:1] != captions.shape[:1]:
            raise ValueError(f"captions must have the batch size of regions ({regions.shape[0]}), "
                             f"got {captions.shape[0]}")
        if captions.min() < 0 or captions.max() >= self.config.vocab_size:
            raise ValueError(f"captions must hold token ids in [0, {self.config.vocab_size})")
