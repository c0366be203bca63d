"""Decoder-only language model with a KV cache, and text generation by greedy or sampled decoding (seed section 25).

The model is GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"):

    h_0 = W_tok[x] + W_pos[position]                                 token + learned position embeddings
    h_l = h_{l-1} + Attn(LN(h_{l-1}));  h_l = h_l + MLP(LN(h_l))       pre-norm causal blocks, GELU (tanh)
    logits = LN_f(h_L) W_tok^T                                        final LayerNorm, LM head tied to W_tok

Generation is autoregressive: the prompt is run once ("prefill") and every later step feeds only the newest
token, reusing the keys and values of the earlier ones from a :class:`KVCache` (each step costs O(N) instead of
O(N^2)). The next token is chosen from the last position's logits by :func:`next_token`:

* greedy: ``argmax``;
* sampling (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", for top-p):
  ``logits / temperature``, then keep the ``top_k`` largest, then keep the nucleus (the smallest set of the
  most probable tokens whose probability reaches ``top_p``), renormalize and draw with a ``torch.Generator``.

The order temperature -> top-k -> top-p is the one ``transformers`` uses. Batches of prompts of different
lengths are **left**-padded, with ``attention_mask`` (1 = token, 0 = padding), so that every row's next token
sits in the last column; positions count real tokens only (``cumsum(mask) - 1``), as in ``transformers``.

Blocks are :class:`reference.transformer.TransformerEncoderLayer` (pre-norm, causal), so attention goes
through :class:`reference.attention.MultiHeadAttention` and the ``backend=`` seam. Not covered: dropout
(the reference is the deterministic function), stop tokens (generation always runs ``max_new_tokens`` steps),
beam search, repetition penalties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reference._validation import check_divisible, check_token_ids
from reference.transformer import TransformerEncoderLayer

__all__ = ["DecoderLMConfig", "KVCache", "DecoderLM", "top_k_filter", "top_p_filter", "next_token"]


@dataclass
class DecoderLMConfig:
    vocab_size: int = 50257
    context_length: int = 1024  # the number of learned positions (GPT-2's n_positions)
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    dim_feedforward: int | None = None  # default 4 * d_model, as in GPT-2
    layer_norm_eps: float = 1e-5
    backend: str = "reference"  # attention implementation, passed down to scaled_dot_product_attention

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_divisible("d_model", self.d_model, "num_heads", self.num_heads)
        if self.dim_feedforward is None:
            self.dim_feedforward = 4 * self.d_model

    @classmethod
    def from_gpt2(cls, gpt2_config, backend: str = "reference") -> DecoderLMConfig:
        """The configuration of a ``transformers.GPT2Config``; raises on the GPT-2 options this model lacks."""
        unsupported = {
            "activation_function": gpt2_config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"),
            "scale_attn_weights": not gpt2_config.scale_attn_weights,
            "scale_attn_by_inverse_layer_idx": gpt2_config.scale_attn_by_inverse_layer_idx,
            "add_cross_attention": gpt2_config.add_cross_attention,
            "tie_word_embeddings": not gpt2_config.tie_word_embeddings,
        }
        for option, bad in unsupported.items():
            if bad:
                raise ValueError(f"GPT2Config.{option}={getattr(gpt2_config, option)!r} is not supported")
        return cls(vocab_size=gpt2_config.vocab_size, context_length=gpt2_config.n_positions,
                   d_model=gpt2_config.n_embd, num_layers=gpt2_config.n_layer, num_heads=gpt2_config.n_head,
                   dim_feedforward=gpt2_config.n_inner, layer_norm_eps=gpt2_config.layer_norm_epsilon,
                   backend=backend)


class KVCache:
    """The keys and values of every token seen so far, one dict per layer.

    Each dict is filled and extended by :class:`reference.attention.MultiHeadAttention` (``"k"`` and ``"v"``,
    ``(B, H, N_seen, Dh)``); the cache only holds them and reports how many tokens it has seen.
    """

    def __init__(self, num_layers: int):
        self.layers: list[dict] = [{} for _ in range(num_layers)]

    @property
    def length(self) -> int:
        first = self.layers[0] if self.layers else {}
        return first["k"].shape[2] if "k" in first else 0


class DecoderLM(nn.Module):
    """GPT-2 style decoder-only language model (see the module docstring).

    Shapes:
        input_ids ``(B, N)`` int, or inputs_embeds ``(B, N, E)``; attention_mask ``(B, N_cached + N)``
        -> logits ``(B, N, V)``.
    """

    def __init__(self, config: DecoderLMConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.context_length, config.d_model)
        self.blocks = nn.ModuleList(
            TransformerEncoderLayer(config.d_model, config.num_heads, config.dim_feedforward, activation="gelu_tanh",
                                    norm_first=True, layer_norm_eps=config.layer_norm_eps, backend=config.backend)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.apply(self._init_weights)
        # GPT-2 section 2.3: the projections that write into the residual stream start 1/sqrt(2 L) smaller,
        # so that the residual's variance does not grow with depth.
        for block in self.blocks:
            for proj in (block.self_attn.out_proj, block.feed_forward.linear2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @torch.no_grad()
    def copy_from_gpt2(self, theirs) -> DecoderLM:
        """Load the weights of a ``transformers.GPT2LMHeadModel`` with the same configuration.

        GPT-2 stores its projections as ``Conv1D`` with weight ``(in, out)`` (``y = x W + b``), the transpose of
        ``nn.Linear``'s ``(out, in)``; its attention input projection ``c_attn`` is fused, ``[W_q | W_k | W_v]``
        along the output dimension.
        """
        mine = DecoderLMConfig.from_gpt2(theirs.config, backend=self.config.backend)
        if mine != self.config:
            raise ValueError(f"copy_from_gpt2: configurations differ: ours {self.config}, theirs {mine}")
        body = theirs.transformer
        self.token_embedding.weight.copy_(body.wte.weight)
        self.position_embedding.weight.copy_(body.wpe.weight)
        self.final_norm.load_state_dict(body.ln_f.state_dict())
        for block, their_block in zip(self.blocks, body.h, strict=True):
            attention, mlp = block.self_attn, block.feed_forward
            q_k_v_weights = their_block.attn.c_attn.weight.t().chunk(3)  # 3 x (E, E), (out, in) as nn.Linear
            q_k_v_biases = their_block.attn.c_attn.bias.chunk(3)
            for proj, weight, bias in zip((attention.q_proj, attention.k_proj, attention.v_proj), q_k_v_weights,
                                          q_k_v_biases, strict=True):
                proj.weight.copy_(weight)
                proj.bias.copy_(bias)
            for linear, conv in ((attention.out_proj, their_block.attn.c_proj), (mlp.linear1, their_block.mlp.c_fc),
                                 (mlp.linear2, their_block.mlp.c_proj)):
                linear.weight.copy_(conv.weight.t())
                linear.bias.copy_(conv.bias)
            block.norm1.load_state_dict(their_block.ln_1.state_dict())
            block.norm2.load_state_dict(their_block.ln_2.state_dict())
        return self

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks))

    def forward(self, input_ids: torch.Tensor | None = None, *, inputs_embeds: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """Next-token logits at every position of the new tokens.

        Args:
            input_ids: ``(B, N)`` token ids; or
            inputs_embeds: ``(B, N, E)`` input embeddings used in place of token embeddings (a ClipCap prefix,
                say); position embeddings are added to them as to tokens.
            attention_mask: ``(B, N_cached + N)``, 1/True for tokens and 0/False for left padding, covering the
                cached tokens as well as the new ones.
            cache: a :class:`KVCache`; the new tokens' keys and values are appended to it.
        """
        x = self._embed_tokens(input_ids, inputs_embeds)  # (B, N, E)
        batch, length = x.shape[:2]
        past = 0 if cache is None else cache.length
        if cache is not None and len(cache.layers) != len(self.blocks):
            raise ValueError(f"cache must have {len(self.blocks)} layers, got {len(cache.layers)}")
        if past + length > self.config.context_length:
            name = "input_ids" if input_ids is not None else "inputs_embeds"
            raise ValueError(f"{name}: {length} new tokens after {past} cached exceed the context_length "
                             f"{self.config.context_length}")
        padding = None if attention_mask is None else ~_as_token_mask(attention_mask, batch, past + length)
        x = x + self.position_embedding(self._positions(batch, past, length, padding, x.device))  # (B, N, E)
        for i, block in enumerate(self.blocks):
            x = block(x, key_padding_mask=padding, is_causal=True, kv_cache=None if cache is None else cache.layers[i])
        x = self.final_norm(x)
        return x @ self.token_embedding.weight.t()  # (B, N, V): the LM head is tied to the token embeddings

    def _embed_tokens(self, input_ids, inputs_embeds) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is not None:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.d_model:
                raise ValueError(f"inputs_embeds must have shape (B, N, {self.config.d_model}), "
                                 f"got {tuple(inputs_embeds.shape)}")
            return inputs_embeds
        check_token_ids("input_ids", input_ids, self.config.vocab_size)
        return self.token_embedding(input_ids)  # (B, N, E)

    @staticmethod
    def _positions(batch: int, past: int, length: int, padding, device) -> torch.Tensor:
        """``(B, N)`` position ids of the new tokens: counted over real tokens only when there is padding."""
        if padding is None:
            return torch.arange(past, past + length, device=device).expand(batch, length)
        counted = (~padding).long().cumsum(dim=1) - 1  # (B, N_cached + N); -1 on leading padding
        return counted.clamp(min=0)[:, past:]  # padding's position is irrelevant: no real token attends to it

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, *, attention_mask: torch.Tensor | None = None,
                 prefix_embeds: torch.Tensor | None = None, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Extend each prompt by ``max_new_tokens`` tokens.

        Args:
            input_ids: ``(B, N)`` prompts, left-padded where their lengths differ; ``N`` may be 0 when
                ``prefix_embeds`` is given.
            max_new_tokens: how many tokens to append (generation never stops early).
            attention_mask: ``(B, N)``, 1/True for tokens, 0/False for left padding.
            prefix_embeds: ``(B, P, E)`` input embeddings placed before the prompt (a ClipCap image prefix);
                they count towards the context length but are not returned.
            do_sample: sample with ``temperature``/``top_k``/``top_p`` and ``generator``; otherwise greedy.
            use_cache: reuse keys and values (a :class:`KVCache`); False recomputes the whole sequence each step.

        Returns:
            ``(B, N + max_new_tokens)``: the prompts followed by the generated tokens.
        """
        check_token_ids("input_ids", input_ids, self.config.vocab_size, allow_empty=prefix_embeds is not None)
        _check_sampling_arguments(temperature, top_k, top_p)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        batch, length = input_ids.shape
        prefix = 0
        if prefix_embeds is not None:
            if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != batch or \
                    prefix_embeds.shape[2] != self.config.d_model:
                raise ValueError(f"prefix_embeds must have shape (B, P, E) = ({batch}, P, {self.config.d_model}), "
                                 f"got {tuple(prefix_embeds.shape)}")
            prefix = prefix_embeds.shape[1]
        if prefix + length > self.config.context_length:
            raise ValueError(f"input_ids: the prompt ({prefix} prefix + {length} tokens) is longer than the "
                             f"context_length {self.config.context_length}")
        if prefix + length + max_new_tokens > self.config.context_length:
            raise ValueError(f"max_new_tokens: {prefix} prefix + {length} prompt + {max_new_tokens} new tokens "
                             f"exceed the context_length {self.config.context_length}")
        if attention_mask is not None:
            attention_mask = _check_left_padding(attention_mask, batch, length)
            if prefix:  # the prefix is real input for every row
                attention_mask = torch.cat([attention_mask.new_ones(batch, prefix), attention_mask], dim=1)

        def embed(ids: torch.Tensor) -> torch.Tensor:
            tokens = self.token_embedding(ids)  # (B, N, E)
            return tokens if prefix_embeds is None else torch.cat([prefix_embeds.to(tokens.dtype), tokens], dim=1)

        tokens = input_ids
        cache = self.new_cache() if use_cache else None
        logits = self(inputs_embeds=embed(tokens), attention_mask=attention_mask, cache=cache)  # prefill
        for step in range(max_new_tokens):
            chosen = next_token(logits[:, -1], do_sample=do_sample, temperature=temperature, top_k=top_k,
                                top_p=top_p, generator=generator)  # (B,)
            tokens = torch.cat([tokens, chosen[:, None]], dim=1)  # (B, N + step + 1)
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
            if step + 1 == max_new_tokens:
                break  # the last token needs no logits after it
            if use_cache:
                logits = self(chosen[:, None], attention_mask=attention_mask, cache=cache)  # (B, 1, V)
            else:
                logits = self(inputs_embeds=embed(tokens), attention_mask=attention_mask)  # (B, P + N + step + 1, V)
        return tokens


# --------------------------------------------------------------------------------------------------
# Choosing the next token
# --------------------------------------------------------------------------------------------------


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (and any tied with the k-th), set the rest to ``-inf``."""
    kth_largest = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the nucleus of each row: the most probable tokens whose total probability first reaches ``p``.

    A token is kept when the probability of the tokens ranked above it is still below ``p``; so the most
    probable token is always kept, and ``p = 1`` keeps everything.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs  # (B, V): probability of the tokens ranked higher
    keep_sorted = mass_above < p
    keep = keep_sorted.scatter(-1, order, keep_sorted)  # back to vocabulary order
    return logits.masked_fill(~keep, float("-inf"))


def next_token(logits: torch.Tensor, *, do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, V)`` logits -> ``(B,)`` token ids: argmax, or a draw from the filtered, tempered distribution."""
    _check_sampling_arguments(temperature, top_k, top_p)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, V), got {tuple(logits.shape)}")
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = F.softmax(logits.double(), dim=-1)  # float64: tiny tempered probabilities do not underflow to 0
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]


# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------


def _check_sampling_arguments(temperature, top_k, top_p) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (or None), got {top_p!r}")


def _as_token_mask(attention_mask, batch: int, length: int) -> torch.Tensor:
    """The boolean ``(B, N)`` mask, True for tokens, from a bool or 0/1 integer ``attention_mask``."""
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.is_floating_point():
        raise TypeError("attention_mask must be a bool or integer tensor (1 = token, 0 = padding)")
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask must have shape (B, N_cached + N) = {(batch, length)}, "
                         f"got {tuple(attention_mask.shape)}")
    if attention_mask.dtype != torch.bool and ((attention_mask != 0) & (attention_mask != 1)).any():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    return attention_mask.bool()


def _check_left_padding(attention_mask, batch: int, length: int) -> torch.Tensor:
    tokens = _as_token_mask(attention_mask, batch, length)
    if length and (~tokens[:, -1]).any():
        raise ValueError("attention_mask: prompts must be left-padded (each row's last token real); "
                         "right padding would put padding between the prompt and the generated tokens")
    if (tokens[:, :-1] & ~tokens[:, 1:]).any():
        raise ValueError("attention_mask: padding must come before the tokens (left padding), not between them")
    return tokens
