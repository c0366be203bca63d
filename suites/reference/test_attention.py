"""reference/attention.py against independent oracles.

* scaled_dot_product_attention: torch's SDPA (with explicit masks, since torch's `is_causal` is
  top-left aligned) and an explicit softmax written out here, in float64 and float32.
* MultiHeadAttention / SelfAttention: torch.nn.MultiheadAttention(batch_first=True), weights copied.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.attention import (
    MultiHeadAttention,
    SelfAttention,
    causal_mask,
    scaled_dot_product_attention,
    varlen_attention,
)

DTYPES = [torch.float64, torch.float32]


def _qkv(seed, b, hq, hkv, nq, nk, d, dtype=torch.float64):
    return (random_tensor((b, hq, nq, d), seed=seed, dtype=dtype),
            random_tensor((b, hkv, nk, d), seed=seed + 1, dtype=dtype),
            random_tensor((b, hkv, nk, d), seed=seed + 2, dtype=dtype))


def _explicit_attention(q, k, v, keep, scale):
    """The formula written out once more, head by head, without the reference's helpers."""
    b, hq, nq, _ = q.shape
    hkv = k.shape[1]
    out = torch.zeros(b, hq, nq, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        for h in range(hq):
            kv = h // (hq // hkv)
            scores = (q[bi, h] @ k[bi, kv].T) * scale
            scores = scores.masked_fill(~keep[bi, h], -math.inf)
            weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully masked rows: zeros
            out[bi, h] = weights @ v[bi, kv]
    return out


SHAPES = [
    # (B, Hq, Hkv, Nq, Nk, D)
    (2, 4, 4, 17, 17, 32),  # plain self-attention
    (1, 6, 2, 23, 41, 16),  # grouped-query, cross-attention with more keys than queries
    (2, 4, 1, 31, 9, 8),  # multi-query, fewer keys than queries
    (1, 2, 2, 1, 97, 64),  # one query (decoding), 97 keys: not a multiple of any tile
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_torch_sdpa_and_explicit_math(seed, dtype, shape, causal):
    b, hq, hkv, nq, nk, d = shape
    q, k, v = _qkv(seed, *shape)
    padding = torch.rand(b, nk, generator=torch.Generator().manual_seed(seed)) < 0.3
    padding[:, -1] = False  # keep one key per row so that only the causal mask can empty a row
    keep = ~padding[:, None, None, :].expand(b, hq, nq, nk)
    if causal:
        keep = keep & causal_mask(nq, nk)
    gold = scaled_dot_product_attention(q, k, v, key_padding_mask=padding, is_causal=causal)
    baseline = scaled_dot_product_attention(*(t.to(dtype) for t in (q, k, v)), key_padding_mask=padding,
                                            is_causal=causal)
    torch_out = F.scaled_dot_product_attention(*(t.to(dtype) for t in (q, k, v)), attn_mask=keep,
                                               enable_gqa=hq != hkv).nan_to_num(0.0)
    assert_agrees(torch_out, gold, baseline, name="torch sdpa")
    assert_agrees(_explicit_attention(q, k, v, keep, 1 / math.sqrt(d)).to(dtype), gold, baseline, name="explicit")


def test_additive_and_boolean_masks_agree_with_torch(seed):
    q, k, v = _qkv(seed, 2, 3, 3, 19, 29, 16)
    additive = random_tensor((2, 1, 19, 29), seed=seed + 3, dtype=torch.float64)
    boolean = torch.rand(19, 29, generator=torch.Generator().manual_seed(seed)) < 0.8
    boolean[:, 0] = True
    for mask in (additive, boolean):
        gold = scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
        assert_agrees(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3), gold)


def test_bottom_right_causal_alignment():
    keep = causal_mask(2, 5)
    assert keep.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert causal_mask(3, 3).equal(torch.ones(3, 3, dtype=torch.bool).tril())


def test_fully_masked_rows_are_zero_with_minus_infinite_lse(seed):
    q, k, v = _qkv(seed, 1, 2, 2, 5, 3, 8)  # causal with Nq > Nk: the first two query rows see no key
    out, lse = scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True)
    assert torch.equal(out[:, :, :2], torch.zeros_like(out[:, :, :2]))
    assert torch.isneginf(lse[:, :, :2]).all() and torch.isfinite(lse[:, :, 2:]).all()
    assert torch.isfinite(out).all()


def test_lse_is_the_log_normalizer(seed):
    q, k, v = _qkv(seed, 2, 4, 2, 11, 13, 16)
    _, lse = scaled_dot_product_attention(q, k, v, return_lse=True, scale=0.5)
    scores = (q @ k.repeat_interleave(2, dim=1).transpose(-2, -1)) * 0.5
    assert_agrees(lse, torch.logsumexp(scores, dim=-1), name="lse")


def test_large_logits_do_not_overflow(seed):
    q, k, v = _qkv(seed, 1, 2, 2, 16, 16, 32)
    q = q * 300  # scores around 1e3: exp() of them overflows without the max subtraction
    gold = scaled_dot_product_attention(q, k, v)
    assert torch.isfinite(gold).all()
    assert_agrees(F.scaled_dot_product_attention(q, k, v), gold)


def test_varlen_equals_each_sequence_alone(seed):
    lengths_q, lengths_k = [3, 1, 7], [5, 2, 7]
    cu_q = torch.tensor([0, 3, 4, 11], dtype=torch.int32)
    cu_k = torch.tensor([0, 5, 7, 14], dtype=torch.int32)
    q = random_tensor((sum(lengths_q), 4, 8), seed=seed, dtype=torch.float64)
    k = random_tensor((sum(lengths_k), 2, 8), seed=seed + 1, dtype=torch.float64)
    v = random_tensor((sum(lengths_k), 2, 8), seed=seed + 2, dtype=torch.float64)
    packed = varlen_attention(q, k, v, cu_q, cu_k, is_causal=True)
    for s in range(3):
        qs, ks, vs = (t.transpose(0, 1)[None] for t in (q[cu_q[s]:cu_q[s + 1]], k[cu_k[s]:cu_k[s + 1]],
                                                           v[cu_k[s]:cu_k[s + 1]]))
        alone = scaled_dot_product_attention(qs, ks, vs, is_causal=True)[0].transpose(0, 1)
        assert torch.equal(packed[cu_q[s]:cu_q[s + 1]], alone)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multihead_attention_matches_torch(seed, dtype):
    torch.manual_seed(seed)
    theirs = torch.nn.MultiheadAttention(48, 6, batch_first=True).double()
    ours = MultiHeadAttention(48, 6).double()
    ours.copy_from_torch(theirs)
    query = random_tensor((3, 10, 48), seed=seed, dtype=torch.float64)
    memory = random_tensor((3, 14, 48), seed=seed + 1, dtype=torch.float64)
    padding = torch.zeros(3, 14, dtype=torch.bool)
    padding[1, 9:] = True  # the second sequence is 9 keys long
    gold = ours(query, memory, key_padding_mask=padding)
    baseline = ours.to(dtype)(query.to(dtype), memory.to(dtype), key_padding_mask=padding)
    candidate, _ = theirs.to(dtype)(query.to(dtype), memory.to(dtype), memory.to(dtype), key_padding_mask=padding)
    assert_agrees(candidate, gold, baseline, name="nn.MultiheadAttention")


def test_self_attention_matches_torch_with_causal_mask_and_gradients(seed):
    torch.manual_seed(seed)
    theirs = torch.nn.MultiheadAttention(32, 4, batch_first=True).double()
    ours = SelfAttention(32, 4).double()
    ours.copy_from_torch(theirs)
    x = random_tensor((2, 12, 32), seed=seed, dtype=torch.float64).requires_grad_()
    gold = ours(x, is_causal=True)
    upper = ~causal_mask(12, 12)  # torch's bool attn_mask marks the *disallowed* pairs
    candidate, _ = theirs(x, x, x, attn_mask=upper, need_weights=False)
    assert_agrees(candidate, gold)
    grad_gold, = torch.autograd.grad(gold.square().sum(), x)
    grad_candidate, = torch.autograd.grad(candidate.square().sum(), x)
    assert_agrees(grad_candidate, grad_gold, gradient=True, name="dx")


def test_grouped_query_mha_equals_repeated_kv_heads(seed):
    torch.manual_seed(seed)
    gqa = MultiHeadAttention(32, 8, num_kv_heads=2).double()
    full = MultiHeadAttention(32, 8).double()
    with torch.no_grad():  # expand each kv head's projection rows to the 4 query heads it serves
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(2, 1, 4, 32).expand(2, 4, 4, 32).reshape(32, 32)
            b = getattr(gqa, name).bias.view(2, 1, 4).expand(2, 4, 4).reshape(32)
            getattr(full, name).weight.copy_(w)
            getattr(full, name).bias.copy_(b)
        for name in ("q_proj", "out_proj"):
            getattr(full, name).load_state_dict(getattr(gqa, name).state_dict())
    x = random_tensor((2, 9, 32), seed=seed, dtype=torch.float64)
    assert_agrees(full(x, is_causal=True), gqa(x, is_causal=True), name="repeated heads")


def test_kv_cache_decoding_equals_full_recomputation(seed):
    torch.manual_seed(seed)
    attention = SelfAttention(32, 4, num_kv_heads=2).double()
    x = random_tensor((2, 7, 32), seed=seed, dtype=torch.float64)
    full = attention(x, is_causal=True)
    cache: dict = {}
    steps = [attention(x[:, :4], is_causal=True, kv_cache=cache)]
    steps += [attention(x[:, i : i + 1], is_causal=True, kv_cache=cache) for i in range(4, 7)]
    assert_agrees(torch.cat(steps, dim=1), full, name="cached decoding")


# ---- bad input: each common mistake raises naming the argument ---------------------------------------


def test_bad_inputs_raise_naming_the_argument():
    q = torch.randn(1, 4, 8, 16)
    k = torch.randn(1, 2, 8, 16)
    cases = [
        (dict(q=q[0]), ValueError, "q must have shape \\(B, H, N, D\\)"),
        (dict(q=q.to(torch.int64)), TypeError, "q must be a floating-point"),
        (dict(k=torch.randn(1, 3, 8, 16), v=torch.randn(1, 3, 8, 16)), ValueError, "multiple of the heads"),
        (dict(k=torch.randn(1, 2, 8, 12), v=torch.randn(1, 2, 8, 12)), ValueError, "head dimension of q"),
        (dict(v=torch.randn(1, 2, 9, 16)), ValueError, "k and v must agree"),
        (dict(v=k.double()), TypeError, "share a dtype"),
        (dict(attn_mask=torch.ones(8, 9, dtype=torch.bool)), ValueError, "attn_mask must broadcast"),
        (dict(attn_mask=torch.ones(8, 8, dtype=torch.int32)), TypeError, "attn_mask must be bool"),
        (dict(key_padding_mask=torch.zeros(1, 9, dtype=torch.bool)), ValueError, "key_padding_mask must have shape"),
        (dict(key_padding_mask=torch.zeros(1, 8)), TypeError, "key_padding_mask must be a bool"),
        (dict(scale=-1.0), ValueError, "scale must be"),
        (dict(scale=True), ValueError, "scale must be"),  # a bool is a mistake, not a scale of 1
        (dict(attn_mask=[[True]]), TypeError, "attn_mask must be a tensor"),
        (dict(backend="nope"), ValueError, "backend must be one of"),
    ]
    for overrides, error, message in cases:
        args = dict(q=q, k=k, v=k.clone()) | overrides
        with pytest.raises(error, match=message):
            scaled_dot_product_attention(**args)


def test_bad_cu_seqlens_raise():
    q = torch.randn(6, 2, 8)
    good = torch.tensor([0, 2, 6], dtype=torch.int32)
    for bad, message in ((torch.tensor([0, 4, 2, 6]), "non-decreasing"), (torch.tensor([1, 6]), "start at 0"),
                         (torch.tensor([0, 5]), "end at the packed length 6"), (torch.tensor([0.0, 6.0]), "int32")):
        with pytest.raises((ValueError, TypeError), match=message):
            varlen_attention(q, q, q, bad, good if bad.numel() == 3 else bad)


def test_mha_rejects_bad_configuration_and_input():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        MultiHeadAttention(32, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="query must have shape"):
        MultiHeadAttention(32, 4)(torch.randn(2, 5, 16))
