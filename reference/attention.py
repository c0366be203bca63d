"""Scaled dot-product attention and multi-head attention: the spec for every attention kernel.

Vaswani et al. 2017, "Attention Is All You Need", section 3.2:

    Attention(Q, K, V) = softmax(Q K^T * scale + mask) V,    scale = 1 / sqrt(D)

Conventions (every backend follows them, and the kernels are checked against them):

* Layout ``(B, H, N, D)``: batch, heads, sequence, head dimension.
* Grouped-query attention: ``q`` has ``Hq`` heads, ``k``/``v`` have ``Hkv`` heads with ``Hq % Hkv == 0``;
  query head ``h`` reads key/value head ``h // (Hq // Hkv)`` (multi-query attention is ``Hkv == 1``).
* ``attn_mask``: boolean (True = may attend, as in ``torch.nn.functional.scaled_dot_product_attention``)
  or additive float, broadcastable to ``(B, Hq, Nq, Nk)``.
* ``key_padding_mask``: boolean ``(B, Nk)``, True where the key is padding and must be ignored
  (the convention of ``torch.nn.MultiheadAttention``).
* ``is_causal`` is aligned to the **bottom right**: query ``i`` may attend key ``j`` when
  ``j <= i + (Nk - Nq)``. With ``Nq == Nk`` this is the usual lower triangle; with a KV cache
  (``Nq < Nk``) the last query sees every key. FlashAttention >= 2.1 uses this alignment;
  ``torch``'s ``is_causal=True`` is top-left aligned, so tests build explicit masks for it.
* ``causal_alignment`` says where that bottom right is when a ``key_padding_mask`` makes the batch
  ragged (:func:`key_causal_positions`): ``"padded"`` (the default) aligns the diagonal to the padded
  key length ``Nk``; ``"valid"`` aligns it to each sequence's valid keys, as if its padding were removed
  (query ``i`` may attend the valid key of rank ``r`` when ``r <= i + (L_b - Nq)``, ``L_b`` the number
  of valid keys of sequence ``b``). ``"valid"`` is flash-attn's meaning for queries that are all real
  (its padded test reference ``attention_ref(..., key_padding_mask, causal=True)`` on right-padded keys,
  and ``flash_attn_varlen_func`` on the unpadded batch, which :func:`varlen_attention` reproduces).
  The two agree without padding and whenever the padding sits before the valid keys (left padding).
* The log-sum-exp is returned in float32 (float64 for float64 inputs), whatever the inputs' dtype,
  as flash-attn and torch return it.
* A query row with no key left to attend (fully masked) yields **zeros**, not NaN, and its
  log-sum-exp is ``-inf``.

The one seam: every module in ``reference/`` computes attention through
:func:`scaled_dot_product_attention`, whose ``backend=`` picks the implementation. The default,
``"reference"``, is the textbook code below. Other backends are registered with
:func:`register_attention_backend`, or are declared as entry points and loaded on first use
(``"triton"``, kernels/attention.py; see reference/backends.py), so this package never imports ``kernels/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from reference._validation import check_divisible, check_float_tensor
from reference.backends import Backends

__all__ = [
    "scaled_dot_product_attention",
    "varlen_attention",
    "causal_mask",
    "key_causal_positions",
    "CAUSAL_ALIGNMENTS",
    "validate_masks",
    "validate_scale",
    "validate_causal_alignment",
    "register_attention_backend",
    "attention_backends",
    "ATTENTION_BACKENDS",
    "MultiHeadAttention",
    "SelfAttention",
]

# --------------------------------------------------------------------------------------------------
# The backend seam
# --------------------------------------------------------------------------------------------------

AttentionFn = Callable[..., "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
ATTENTION_BACKENDS = Backends("attention")  # "triton" is declared in pyproject.toml (reference/backends.py)


def register_attention_backend(name: str, fn: AttentionFn) -> None:
    """Make ``fn`` available as ``backend=name``.

    ``fn`` receives validated arguments ``(q, k, v, *, attn_mask, key_padding_mask, is_causal, scale,
    return_lse, causal_alignment)`` exactly as :func:`scaled_dot_product_attention` documents them, and raises
    ``NotImplementedError`` naming any feature it does not support.
    """
    ATTENTION_BACKENDS.register(name, fn)


def attention_backends() -> list[str]:
    """The backends known here: registered, or declared by an entry point (listing them imports none)."""
    return ATTENTION_BACKENDS.names()


# --------------------------------------------------------------------------------------------------
# Scaled dot-product attention
# --------------------------------------------------------------------------------------------------


def causal_mask(n_queries: int, n_keys: int, device=None) -> torch.Tensor:
    """Boolean ``(Nq, Nk)`` mask, True where query i may attend key j: ``j <= i + (Nk - Nq)``."""
    rows = torch.arange(n_queries, device=device)[:, None]
    cols = torch.arange(n_keys, device=device)[None, :]
    return cols <= rows + (n_keys - n_queries)


CAUSAL_ALIGNMENTS = ("padded", "valid")


def key_causal_positions(key_padding_mask: torch.Tensor, alignment: str) -> torch.Tensor:
    """``(B, Nk)`` int64: the position each key takes in the causal test ``position <= i + (Nk - Nq)``,
    -1 on padding.

    ``"padded"``: a key's own index ``j``. ``"valid"``: its rank among its sequence's valid keys shifted
    by the sequence's padding count, ``rank + (Nk - L_b)``, so the test reads ``rank <= i + (L_b - Nq)``:
    the diagonal sits at the bottom right of the valid keys. Padding before every valid key (left
    padding) gives ``rank + (Nk - L_b) = j``: both alignments agree there.
    """
    validate_causal_alignment(alignment)
    valid = ~key_padding_mask  # (B, Nk)
    n_keys = key_padding_mask.shape[-1]
    if alignment == "padded":
        position = torch.arange(n_keys, device=valid.device).expand_as(valid)  # (B, Nk)
    else:
        rank = valid.long().cumsum(-1) - 1  # (B, Nk)
        position = rank + (n_keys - valid.long().sum(-1, keepdim=True))
    return torch.where(valid, position, -1)


def _broadcasts_to(shape, target) -> bool:
    try:
        return len(shape) <= len(target) and torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def validate_masks(attn_mask, key_padding_mask, scores_shape: tuple[int, int, int, int]) -> None:
    """The masks' conventions (module docstring) against the scores' shape ``(B, Hq, Nq, Nk)``: every backend's
    rules (a kernel adds its own, e.g. the masks' device)."""
    b, _, _, nk = scores_shape
    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor):
            raise TypeError(f"attn_mask must be a tensor, got {type(attn_mask).__name__}")
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise TypeError(f"attn_mask must be bool (True = attend) or float (additive), got {attn_mask.dtype}")
        if not _broadcasts_to(attn_mask.shape, tuple(scores_shape)):
            raise ValueError(
                f"attn_mask must broadcast to (B, Hq, Nq, Nk) = {tuple(scores_shape)}, got {tuple(attn_mask.shape)}"
            )
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be a bool tensor (True = padding)")
        if tuple(key_padding_mask.shape) != (b, nk):
            raise ValueError(
                f"key_padding_mask must have shape (B, Nk) = {(b, nk)}, got {tuple(key_padding_mask.shape)}"
            )


def validate_scale(scale) -> None:
    """``scale``: None (``1 / sqrt(D)``) or a positive finite number (a bool is a mistake, not 1)."""
    if scale is not None and not (isinstance(scale, (int, float)) and not isinstance(scale, bool)
                                  and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")


def validate_causal_alignment(alignment) -> None:
    if alignment not in CAUSAL_ALIGNMENTS:
        raise ValueError(f"causal_alignment must be one of {CAUSAL_ALIGNMENTS}, got {alignment!r}")


def _validate(q, k, v, attn_mask, key_padding_mask, scale, causal_alignment="padded") -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float_tensor(name, t, "(B, H, N, D)")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    (b, hq, nq, d), (bk, hkv, nk, dk) = q.shape, k.shape
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k and v must agree in (B, H, N), got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if bk != b:
        raise ValueError(f"k must have the batch size of q ({b}), got {bk}")
    if dk != d:
        raise ValueError(f"k must have the head dimension of q ({d}), got {dk}")
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"the heads of q ({hq}) must be a multiple of the heads of k and v ({hkv})")
    validate_masks(attn_mask, key_padding_mask, (b, hq, nq, nk))
    validate_scale(scale)
    validate_causal_alignment(causal_alignment)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
    causal_alignment: str = "padded",
    backend: str = "reference",
):
    """``softmax(q k^T * scale + mask) v`` with the conventions in the module docstring.

    Args:
        q: ``(B, Hq, Nq, D)``.
        k: ``(B, Hkv, Nk, D)``, ``Hq % Hkv == 0``.
        v: ``(B, Hkv, Nk, Dv)``.
        attn_mask: bool (True = attend) or additive float, broadcastable to ``(B, Hq, Nq, Nk)``.
        key_padding_mask: bool ``(B, Nk)``, True = padding.
        is_causal: bottom-right aligned causal mask.
        scale: softmax scale, default ``1 / sqrt(D)``.
        return_lse: also return the natural log-sum-exp of the scaled, masked scores, ``(B, Hq, Nq)``,
            float32 (float64 for float64 inputs).
        causal_alignment: with ``is_causal`` and a ``key_padding_mask``, ``"padded"`` (the diagonal at the
            bottom right of the padded keys) or ``"valid"`` (at the bottom right of each sequence's valid
            keys, flash-attn's meaning for unpadded queries); see the module docstring.

            Why ``"padded"`` is the default although flash-attn users think in valid lengths: flash-attn
            aligns to the valid lengths of *both* queries and keys, and this function has no query
            padding mask. A padded causal self-attention batch (``Nq == Nk``, queries padded like the
            keys) is flash-attn's per-sequence lower triangle under ``"padded"`` but shifted under
            ``"valid"``, and left-padded generation with a KV cache means the same under both; only
            unpadded queries over right-padded keys (padded cross-attention, chunked prefill over a
            padded cache) need ``"valid"``, and that caller knows it has them.
        backend: ``"reference"`` (this file), ``"sdpa"`` (torch), ``"triton"`` (kernels/attention.py), ...

    Returns:
        ``(B, Hq, Nq, Dv)``, and the log-sum-exp when ``return_lse``.
    """
    _validate(q, k, v, attn_mask, key_padding_mask, scale, causal_alignment)
    return ATTENTION_BACKENDS.get(backend)(
        q, k, v, attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal,
        scale=scale, return_lse=return_lse, causal_alignment=causal_alignment,
    )


def _combined_mask(q, k, attn_mask, key_padding_mask, is_causal, causal_alignment="padded"):
    """(keep, bias): the boolean mask of allowed pairs and the additive float mask, or None for each."""
    keep = None
    if key_padding_mask is not None:
        position = key_causal_positions(key_padding_mask, causal_alignment)[:, None, None, :]  # (B, 1, 1, Nk)
        keep = position >= 0  # not padding
        if is_causal:
            rows = torch.arange(q.shape[2], device=q.device)[:, None]  # (Nq, 1)
            keep = keep & (position <= rows + (k.shape[2] - q.shape[2]))  # (B, 1, Nq, Nk)
    elif is_causal:
        keep = causal_mask(q.shape[2], k.shape[2], device=q.device)  # (Nq, Nk)
    bias = None
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        keep = attn_mask if keep is None else keep & attn_mask
    elif attn_mask is not None:
        bias = attn_mask
    return keep, bias


def _reference_attention(q, k, v, *, attn_mask, key_padding_mask, is_causal, scale, return_lse,
                         causal_alignment="padded"):
    """The textbook computation, in the inputs' dtype, materializing the (Nq, Nk) scores."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    groups = q.shape[1] // k.shape[1]
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        k = k.repeat_interleave(groups, dim=1)  # (B, Hq, Nk, D)
        v = v.repeat_interleave(groups, dim=1)  # (B, Hq, Nk, Dv)

    scores = (q @ k.transpose(-2, -1)) * scale  # (B, Hq, Nq, Nk)
    keep, bias = _combined_mask(q, k, attn_mask, key_padding_mask, is_causal, causal_alignment)
    if bias is not None:
        scores = scores + bias
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))

    lse = torch.logsumexp(scores, dim=-1)  # (B, Hq, Nq); -inf on fully masked rows
    finite_lse = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
    probs = torch.exp(scores - finite_lse[..., None])  # fully masked rows: exp(-inf) = 0
    out = probs @ v  # (B, Hq, Nq, Dv)
    if not return_lse:
        return out
    return out, torch.logsumexp(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)  # float32


def _sdpa_attention(q, k, v, *, attn_mask, key_padding_mask, is_causal, scale, return_lse,
                    causal_alignment="padded"):
    """torch.nn.functional.scaled_dot_product_attention under our conventions (for comparison)."""
    if return_lse:
        raise NotImplementedError("backend 'sdpa' does not return the log-sum-exp")
    keep, bias = _combined_mask(q, k, attn_mask, key_padding_mask, is_causal, causal_alignment)
    mask = bias
    if keep is not None:
        mask = keep if bias is None else bias.masked_fill(~keep, float("-inf"))
    groups = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=groups > 1)
    if keep is not None:  # torch returns NaN on fully masked rows; our convention is zeros
        fully_masked = ~keep.any(dim=-1, keepdim=True)
        if bias is not None:
            fully_masked = fully_masked | torch.isneginf(mask).all(dim=-1, keepdim=True)
        out = out.masked_fill(fully_masked.expand(out.shape[:-1] + (1,)), 0.0)
    return out


register_attention_backend("reference", _reference_attention)
register_attention_backend("sdpa", _sdpa_attention)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
):
    """Attention over a packed batch of variable-length sequences (the reference, one sequence at a time).

    Args:
        q: ``(total_q, Hq, D)``, the sequences concatenated; k: ``(total_k, Hkv, D)``; v: ``(total_k, Hkv, Dv)``.
        cu_seqlens_q / cu_seqlens_k: int ``(S + 1,)`` cumulative offsets starting at 0 and ending at
            the total length; sequence ``s`` is ``q[cu_seqlens_q[s]:cu_seqlens_q[s + 1]]``.

    Returns:
        ``(total_q, Hq, Dv)``, and the log-sum-exp ``(total_q, Hq)`` when ``return_lse``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a packed tensor of shape (total, H, D)")
    for name, cu, total in (("cu_seqlens_q", cu_seqlens_q, q.shape[0]), ("cu_seqlens_k", cu_seqlens_k, k.shape[0])):
        validate_cu_seqlens(name, cu, total)
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError("cu_seqlens_q and cu_seqlens_k must describe the same number of sequences")
    outs, lses = [], []
    for s in range(cu_seqlens_q.numel() - 1):
        q0, q1 = int(cu_seqlens_q[s]), int(cu_seqlens_q[s + 1])
        k0, k1 = int(cu_seqlens_k[s]), int(cu_seqlens_k[s + 1])
        as_bhnd = lambda t: t.transpose(0, 1)[None]  # (N, H, D) -> (1, H, N, D)
        out, lse = scaled_dot_product_attention(
            as_bhnd(q[q0:q1]), as_bhnd(k[k0:k1]), as_bhnd(v[k0:k1]),
            is_causal=is_causal, scale=scale, return_lse=True,
        )
        outs.append(out[0].transpose(0, 1))  # (Nq_s, Hq, Dv)
        lses.append(lse[0].transpose(0, 1))  # (Nq_s, Hq)
    out = torch.cat(outs) if outs else q.new_empty((0, q.shape[1], v.shape[2]))
    lse = torch.cat(lses) if lses else q.new_empty((0, q.shape[1]))
    return (out, lse) if return_lse else out


def validate_cu_seqlens(name: str, cu: torch.Tensor, total: int, device: torch.device | None = None) -> None:
    """Check cumulative sequence lengths: a 1-D int tensor from 0 to ``total``, non-decreasing, on ``device``
    when one is given (the kernels' launchers pass q's device; the reference runs anywhere)."""
    if not isinstance(cu, torch.Tensor) or cu.dtype not in (torch.int32, torch.int64) or cu.dim() != 1:
        raise TypeError(f"{name} must be a 1-D int32 or int64 tensor")
    if device is not None and cu.device != device:
        raise ValueError(f"{name} must be on the device of q ({device}), got {cu.device}")
    if cu.numel() < 1 or int(cu[0]) != 0:
        raise ValueError(f"{name} must start at 0")
    if (cu[1:] < cu[:-1]).any():
        raise ValueError(f"{name} must be non-decreasing")
    if int(cu[-1]) != total:
        raise ValueError(f"{name} must end at the packed length {total}, got {int(cu[-1])}")


# --------------------------------------------------------------------------------------------------
# Multi-head attention (seed section 4) and self-attention (section 19)
# --------------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate Q, K, V and output projections (Vaswani et al. 2017, 3.2.2).

        head_i = Attention(X_q W_q^i, X_k W_k^i, X_v W_v^i);   MHA = concat(head_1..head_H) W_o

    ``num_kv_heads < num_heads`` gives grouped-query attention (Ainslie et al. 2023): the key and value
    projections produce ``num_kv_heads`` heads, each shared by ``num_heads // num_kv_heads`` query heads.

    Shapes:
        query ``(B, Nq, E)``, key/value ``(B, Nk, E_kv)`` (default: the query; self-attention)
        -> ``(B, Nq, E)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, num_kv_heads: int | None = None, kv_dim: int | None = None,
                 bias: bool = True, backend: str = "reference"):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        check_divisible("embed_dim", embed_dim, "num_heads", num_heads)
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.backend = backend
        kv_dim = embed_dim if kv_dim is None else kv_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, num_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @torch.no_grad()
    def copy_from_torch(self, theirs: nn.MultiheadAttention) -> MultiHeadAttention:
        """Load the weights of a ``torch.nn.MultiheadAttention`` (packed in_proj) into this module."""
        same_shape = theirs.embed_dim == self.embed_dim and theirs.num_heads == self.num_heads
        if self.num_kv_heads != self.num_heads or not same_shape:
            raise ValueError("copy_from_torch: shapes differ (torch's module has no grouped-query heads)")
        weights, biases = theirs.in_proj_weight.chunk(3), theirs.in_proj_bias.chunk(3)
        for proj, weight, bias in zip((self.q_proj, self.k_proj, self.v_proj), weights, biases, strict=True):
            proj.weight.copy_(weight)
            proj.bias.copy_(bias)
        self.out_proj.load_state_dict(theirs.out_proj.state_dict())
        return self

    def _split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, heads, self.head_dim).transpose(1, 2)  # (B, H, N, Dh)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None, *,
                attn_mask: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None,
                is_causal: bool = False, kv_cache: dict | None = None) -> torch.Tensor:
        """``kv_cache``: a dict this layer fills with ``"k"``/``"v"`` (B, Hkv, N, Dh) and extends on each
        call, for incremental decoding; the new keys are appended after the cached ones."""
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"query must have shape (B, N, {self.embed_dim}), got {tuple(query.shape)}")
        key = query if key is None else key
        value = key if value is None else value
        q = self._split_heads(self.q_proj(query), self.num_heads)  # (B, H, Nq, Dh)
        k = self._split_heads(self.k_proj(key), self.num_kv_heads)  # (B, Hkv, Nk, Dh)
        v = self._split_heads(self.v_proj(value), self.num_kv_heads)
        if kv_cache is not None:
            if "k" in kv_cache:
                k = torch.cat([kv_cache["k"], k], dim=2)
                v = torch.cat([kv_cache["v"], v], dim=2)
            kv_cache["k"], kv_cache["v"] = k, v
        out = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                           is_causal=is_causal, backend=self.backend)  # (B, H, Nq, Dh)
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.embed_dim)  # (B, Nq, E)
        return self.out_proj(out)


class SelfAttention(MultiHeadAttention):
    """Self-attention (seed section 19): queries, keys and values are projections of one sequence."""

    def forward(self, x: torch.Tensor, *, attn_mask=None, key_padding_mask=None, is_causal: bool = False,
                kv_cache: dict | None = None) -> torch.Tensor:
        return super().forward(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal,
                               kv_cache=kv_cache)
