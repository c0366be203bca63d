"""The reference modules whose core is attention, run with backend="triton" (kernels/attention.py).

MultiHeadAttention / SelfAttention (GQA, KV cache), transformer encoder/decoder layers and stacks, BERT,
DecoderLM (logits, greedy generation), PrefixCaptioner, ViT, VisualBERT and the co-attention transformer.
Each passes the oracle comparison its reference test makes (torch.nn.MultiheadAttention, torch.nn
Transformer layers, transformers' BERT, GPT-2, ViT and VisualBERT) through the agreement policy:
gold = the reference module in float64 (checked once more against the oracle in float64 here),
baseline = the reference module in the dtype under test, candidate = the same weights with
backend="triton" in that dtype. float16 is left to the kernel-level tests: nn.Linear and LayerNorm in
float16 on the CPU add nothing about the kernel. Greedy generation is compared token for token with
GPT-2's generate.
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from oracle_pairs import gpt2_pair
from torch import nn

from correctness.twins import with_backend
from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor, randomize_parameters
from reference.attention import MultiHeadAttention, SelfAttention, causal_mask
from reference.bert import BertConfig, BertForPreTraining, copy_from_transformers
from reference.captioning import PrefixCaptioner, PrefixCaptionerConfig
from reference.fusion import CoAttentionTransformer, FusionConfig
from reference.generation import DecoderLM, DecoderLMConfig
from reference.transformer import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from reference.vit import VisionTransformer, ViTConfig
from reference.vlm import VisualBertConfig, VisualBertEncoder

DTYPES = [torch.float32, torch.bfloat16]


def _baseline(module_fn, dtype):
    """The reference in the dtype under test: required by the k-rule for bfloat16, unused for float32."""
    return module_fn() if dtype == torch.bfloat16 else None


def _padding(batch: int, length: int, seed: int) -> torch.Tensor:
    lengths = torch.randint(1, length + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    return torch.arange(length)[None, :] >= lengths[:, None]  # True = padding


# ---- multi-head attention and self-attention (reference/attention.py) -------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_multihead_attention_with_triton_matches_torch(seed, dtype):
    torch.manual_seed(seed)
    theirs = torch.nn.MultiheadAttention(48, 6, batch_first=True).double()
    reference = MultiHeadAttention(48, 6).double().copy_from_torch(theirs)
    query = random_tensor((3, 10, 48), seed=seed, dtype=torch.float64)
    memory = random_tensor((3, 14, 48), seed=seed + 1, dtype=torch.float64)
    padding = torch.zeros(3, 14, dtype=torch.bool)
    padding[1, 9:] = True  # the second sequence is 9 keys long
    gold = reference(query, memory, key_padding_mask=padding)
    assert_agrees(theirs(query, memory, memory, key_padding_mask=padding)[0], gold, name="oracle")
    cast = (query.to(dtype), memory.to(dtype))
    baseline = _baseline(lambda: copy.deepcopy(reference).to(dtype)(*cast, key_padding_mask=padding), dtype)
    candidate = with_backend(reference, "triton", dtype)(*cast, key_padding_mask=padding)
    assert_agrees(candidate, gold, baseline, name="MultiHeadAttention backend=triton")


@pytest.mark.parametrize("dtype", DTYPES)
def test_self_attention_with_triton_matches_torch_with_causal_mask_and_gradients(seed, dtype):
    torch.manual_seed(seed)
    theirs = torch.nn.MultiheadAttention(32, 4, batch_first=True).double()
    reference = SelfAttention(32, 4).double().copy_from_torch(theirs)
    x64 = random_tensor((2, 12, 32), seed=seed, dtype=torch.float64).requires_grad_()
    gold = reference(x64, is_causal=True)
    oracle, _ = theirs(x64, x64, x64, attn_mask=~causal_mask(12, 12), need_weights=False)  # True = disallowed
    assert_agrees(oracle, gold, name="oracle")
    (grad_gold,) = torch.autograd.grad(gold.square().sum(), x64)

    def run(module):
        x = x64.detach().to(dtype).requires_grad_()
        out = module(x, is_causal=True)
        return out, torch.autograd.grad(out.float().square().sum(), x)[0]

    baseline = _baseline(lambda: run(copy.deepcopy(reference).to(dtype)), dtype) or (None, None)
    candidate = run(with_backend(reference, "triton", dtype))
    assert_agrees(candidate[0], gold, baseline[0], name="SelfAttention backend=triton")
    assert_agrees(candidate[1], grad_gold, baseline[1], gradient=True, name="dx")


def test_grouped_query_kv_cache_decoding_with_triton(seed):
    torch.manual_seed(seed)
    reference = SelfAttention(32, 4, num_kv_heads=2).double()
    x = random_tensor((2, 7, 32), seed=seed, dtype=torch.float64)
    gold = reference(x, is_causal=True)
    triton_attention, x32 = with_backend(reference, "triton", torch.float32), x.float()
    cache: dict = {}
    steps = [triton_attention(x32[:, :4], is_causal=True, kv_cache=cache)]  # prefill, then one token at a time
    steps += [triton_attention(x32[:, i : i + 1], is_causal=True, kv_cache=cache) for i in range(4, 7)]
    assert_agrees(torch.cat(steps, dim=1), gold, name="cached decoding, backend=triton")


# ---- transformer encoder / decoder (reference/transformer.py) -------------------------------------------

D_MODEL, HEADS, FFN = 32, 4, 48


@pytest.mark.parametrize("dtype", DTYPES)
def test_encoder_layer_with_triton_matches_torch(seed, dtype):
    torch.manual_seed(seed)
    theirs = nn.TransformerEncoderLayer(D_MODEL, HEADS, FFN, dropout=0.0, activation="gelu",
                                        batch_first=True).double().eval()
    reference = TransformerEncoderLayer(D_MODEL, HEADS, FFN, activation="gelu").double().copy_from_torch(theirs)
    x = random_tensor((3, 11, D_MODEL), seed=seed, dtype=torch.float64)
    padding = _padding(3, 11, seed)
    gold = reference(x, key_padding_mask=padding)
    keep = ~padding[..., None]  # torch's fast path may leave padded positions unspecified: compare real tokens
    assert_agrees(theirs(x, src_key_padding_mask=padding) * keep, gold * keep, name="oracle")
    baseline = _baseline(lambda: copy.deepcopy(reference).to(dtype)(x.to(dtype), key_padding_mask=padding), dtype)
    candidate = with_backend(reference, "triton", dtype)(x.to(dtype), key_padding_mask=padding)
    assert_agrees(candidate, gold, baseline, name="TransformerEncoderLayer backend=triton")


@pytest.mark.parametrize("dtype", DTYPES)
def test_decoder_layer_with_triton_matches_torch(seed, dtype):
    torch.manual_seed(seed)
    theirs = nn.TransformerDecoderLayer(D_MODEL, HEADS, FFN, dropout=0.0, norm_first=True,
                                        batch_first=True).double().eval()
    reference = TransformerDecoderLayer(D_MODEL, HEADS, FFN, norm_first=True).double().copy_from_torch(theirs)
    target = random_tensor((2, 9, D_MODEL), seed=seed, dtype=torch.float64)
    memory = random_tensor((2, 13, D_MODEL), seed=seed + 1, dtype=torch.float64)
    memory_padding = _padding(2, 13, seed)
    gold = reference(target, memory, memory_key_padding_mask=memory_padding)
    oracle = theirs(target, memory, tgt_mask=~causal_mask(9, 9), memory_key_padding_mask=memory_padding)
    assert_agrees(oracle, gold, name="oracle")
    cast = (target.to(dtype), memory.to(dtype))
    baseline = _baseline(lambda: copy.deepcopy(reference).to(dtype)(*cast, memory_key_padding_mask=memory_padding),
                         dtype)
    candidate = with_backend(reference, "triton", dtype)(*cast, memory_key_padding_mask=memory_padding)
    assert_agrees(candidate, gold, baseline, name="TransformerDecoderLayer backend=triton")


def test_encoder_decoder_stack_with_triton_and_gradients(seed):
    torch.manual_seed(seed)
    encoder = TransformerEncoder(lambda: TransformerEncoderLayer(D_MODEL, HEADS, FFN, norm_first=True), 2,
                                 final_norm=nn.LayerNorm(D_MODEL)).double()
    decoder = TransformerDecoder(lambda: TransformerDecoderLayer(D_MODEL, HEADS, FFN, norm_first=True), 2,
                                 final_norm=nn.LayerNorm(D_MODEL)).double()
    source = random_tensor((2, 10, D_MODEL), seed=seed, dtype=torch.float64).requires_grad_()
    target = random_tensor((2, 7, D_MODEL), seed=seed + 1, dtype=torch.float64)
    weights = random_tensor((2, 7, D_MODEL), seed=seed + 2, dtype=torch.float64)
    gold = decoder(target, encoder(source))
    (grad_gold,) = torch.autograd.grad((gold * weights).sum(), source)
    triton_encoder = with_backend(encoder, "triton", torch.float32)
    triton_decoder = with_backend(decoder, "triton", torch.float32)
    source32 = source.detach().float().requires_grad_()
    candidate = triton_decoder(target.float(), triton_encoder(source32))
    (grad_candidate,) = torch.autograd.grad((candidate * weights.float()).sum(), source32)
    assert_agrees(candidate, gold, name="encoder-decoder stack backend=triton")
    assert_agrees(grad_candidate, grad_gold, gradient=True, name="d source")


# ---- BERT (reference/bert.py) ------------------------------------------------------------------------------

TINY_BERT = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                 max_position_embeddings=24, type_vocab_size=2)


def _bert_models(seed: int):
    """(ours in float64, transformers' in float64) with the same random weights."""
    config = transformers.BertConfig(**TINY_BERT, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     attn_implementation="eager")
    theirs = randomize_parameters(transformers.BertForPreTraining(config).double().eval(), seed,
                                  unit_scale=("embeddings",))
    ours = BertForPreTraining(BertConfig.from_transformers(config)).double()
    return copy_from_transformers(ours, theirs), theirs


def _bert_batch(seed: int, batch: int, length: int):
    """Random ids, ragged padding (one row full length), masked-LM labels and next-sentence labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY_BERT["vocab_size"], (batch, length), generator=g)
    lengths = torch.randint(4, length + 1, (batch,), generator=g)
    lengths[0] = length
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    ids[attention_mask == 0] = 0  # [PAD]
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100)
    labels[:, 1] = ids[:, 1]
    return dict(input_ids=ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(ids), labels=labels,
                next_sentence_label=torch.randint(0, 2, (batch,), generator=g))


def _loss_gradient(model: nn.Module, inputs: dict, parameter: str):
    output = model(**inputs)
    (grad,) = torch.autograd.grad(output.loss, dict(model.named_parameters())[parameter])
    return output, grad


@pytest.mark.parametrize("dtype", DTYPES)
def test_bert_pretraining_with_triton_matches_transformers(seed, dtype):
    reference, theirs = _bert_models(seed)
    inputs = _bert_batch(seed, 3, 13)
    # The loss gradient reaches the first layer's query projection through every attention kernel.
    parameter = "bert.encoder.layers.0.self_attn.q_proj.weight"
    gold, grad_gold = _loss_gradient(reference, inputs, parameter)
    assert_agrees(theirs(**inputs).prediction_logits, gold.prediction_logits, name="oracle")
    baseline, grad_baseline = _baseline(lambda: _loss_gradient(copy.deepcopy(reference).to(dtype), inputs, parameter),
                                        dtype) or (None, None)
    candidate, grad_candidate = _loss_gradient(with_backend(reference, "triton", dtype), inputs, parameter)
    for field in ("hidden_states", "prediction_logits", "seq_relationship_logits", "loss"):
        assert_agrees(getattr(candidate, field), getattr(gold, field),
                      None if baseline is None else getattr(baseline, field), name=f"BERT {field} backend=triton")
    assert_agrees(grad_candidate, grad_gold, grad_baseline, gradient=True, name=f"d loss / d {parameter}")


# ---- decoder-only LM and generation (reference/generation.py) ---------------------------------------------

VOCAB, CONTEXT = 97, 40


def _gpt2_models(seed: int):
    """(ours in float64, transformers' GPT-2 in float64) with the same N(0, 0.5) weights, LayerNorms included."""
    theirs, ours = gpt2_pair(seed, vocab_size=VOCAB, context=CONTEXT, width=32, weight_scale=0.5)
    return ours, theirs


def _left_padded_prompts(batch: int, length: int, seed: int):
    """Token ids and a (B, N) mask, 1 = token, random prompt lengths in [1, N], one row unpadded."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None, :] >= length - lengths[:, None]).long()
    return torch.randint(0, VOCAB, (batch, length), generator=g).masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("dtype", DTYPES)
def test_decoder_lm_logits_with_triton_match_gpt2(seed, dtype):
    reference, theirs = _gpt2_models(seed)
    ids, mask = _left_padded_prompts(3, 23, seed)  # 23: not a multiple of any tile
    gold = reference(ids, attention_mask=mask)
    real = mask.bool()[..., None]  # padded positions' logits are not part of either model's contract
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # GPT-2 counts positions over real tokens only if told
    assert_agrees(theirs(ids, attention_mask=mask, position_ids=positions).logits * real, gold * real, name="oracle")
    baseline = _baseline(lambda: copy.deepcopy(reference).to(dtype)(ids, attention_mask=mask), dtype)
    candidate = with_backend(reference, "triton", dtype)(ids, attention_mask=mask)
    assert_agrees(candidate * real, gold * real, None if baseline is None else baseline * real,
                  name="DecoderLM logits backend=triton")


def test_greedy_tokens_with_triton_equal_gpt2_generate(seed):
    """Greedy decoding with the KV cache (one query against a growing cache: bottom-right causal alignment)
    and left padding, in float32, against GPT-2's generate in float64."""
    reference, theirs = _gpt2_models(seed)
    ids, mask = _left_padded_prompts(3, 9, seed)
    new = 12
    expected = theirs.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False)
    tokens = with_backend(reference, "triton", torch.float32).generate(ids, new, attention_mask=mask)
    if not torch.equal(tokens, expected):
        # A float32 argmax may legitimately flip where float64's two best logits differ by less than float32's
        # rounding of them (~1e-6 relative); anything wider is a disagreement about the function.
        row, step = (tokens != expected).nonzero()[0].tolist()
        full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], step - ids.shape[1])], dim=1)[row : row + 1]
        logits = reference(expected[row : row + 1, :step], attention_mask=full_mask)[0, -1]
        best, second = logits.topk(2).values.tolist()
        assert best - second < 1e-4 * max(1.0, abs(best)), (
            f"row {row} step {step}: triton chose {int(tokens[row, step])}, GPT-2 {int(expected[row, step])}, "
            f"float64 logit gap {best - second:.3g} is no near-tie")


# ---- prefix captioning (reference/captioning.py, on the decoder LM) ---------------------------------------


def test_prefix_captioner_loss_and_gradients_with_triton(seed):
    """The image prefix enters as input embeddings before the caption; the caption-only loss and its gradient
    at the mapping network cross every attention kernel, forward and backward."""
    torch.manual_seed(seed)
    decoder = DecoderLM(DecoderLMConfig(vocab_size=61, context_length=16, d_model=32, num_layers=2, num_heads=4))
    reference = PrefixCaptioner(PrefixCaptionerConfig(image_dim=24, prefix_length=4), decoder).double()
    images = random_tensor((4, 24), seed=seed, dtype=torch.float64)
    captions = torch.randint(0, 61, (4, 7), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(7)[None, :] < torch.tensor([[7], [3], [1], [5]])).long()  # right-padded captions

    def loss_and_gradients(model, dtype):
        loss = model.loss(images.to(dtype), captions, mask)
        return loss, torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])

    gold_loss, gold_grads = loss_and_gradients(reference, torch.float64)
    loss, grads = loss_and_gradients(with_backend(reference, "triton", torch.float32), torch.float32)
    assert_agrees(loss, gold_loss, name="caption loss backend=triton")
    names = [n for n, p in reference.named_parameters() if p.requires_grad]
    for name, cand, gold in zip(names, grads, gold_grads, strict=True):
        if name.endswith("k_proj.bias"):
            # Not compared: a key bias adds q . b to every score of a row, which softmax ignores, so its exact
            # gradient is 0 and gold holds only float64 rounding (~1e-20); a relative rule has no scale there.
            continue
        assert_agrees(cand, gold, gradient=True, name=f"d loss / d {name}")


# ---- Vision Transformer (reference/vit.py) ----------------------------------------------------------------


def _vit_models(seed: int):
    """(ours in float64, transformers' ViTModel in float64): 20x20 images, 4x4 patches, 26 tokens with [CLS]."""
    config = transformers.ViTConfig(image_size=20, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=48, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0, attn_implementation="sdpa")
    theirs = randomize_parameters(transformers.ViTModel(config).double().eval(), seed)
    ours = VisionTransformer(ViTConfig(image_size=20, patch_size=4, num_channels=3, hidden_size=32, num_layers=2,
                                       num_heads=4, intermediate_size=48)).double()
    return ours.copy_from_transformers(theirs), theirs


@pytest.mark.parametrize("dtype", DTYPES)
def test_vit_with_triton_matches_transformers(seed, dtype):
    reference, theirs = _vit_models(seed)
    pixels = random_tensor((2, 3, 20, 20), seed=seed, dtype=torch.float64)
    weights = random_tensor((2, 32), seed=seed + 1, dtype=torch.float64)

    def run(model, cast):
        x = pixels.to(cast).requires_grad_()
        out = model(x)
        (grad,) = torch.autograd.grad((out.pooler_output * weights.to(cast)).sum(), x)
        return out, grad

    gold, grad_gold = run(reference, torch.float64)
    with torch.no_grad():
        assert_agrees(theirs(pixel_values=pixels).last_hidden_state, gold.last_hidden_state, name="oracle")
    baseline, grad_baseline = _baseline(lambda: run(copy.deepcopy(reference).to(dtype), dtype), dtype) or (None, None)
    candidate, grad_candidate = run(with_backend(reference, "triton", dtype), dtype)
    for field in ("last_hidden_state", "pooler_output"):
        assert_agrees(getattr(candidate, field), getattr(gold, field),
                      None if baseline is None else getattr(baseline, field), name=f"ViT {field} backend=triton")
    assert_agrees(grad_candidate, grad_gold, grad_baseline, gradient=True, name="d pixel_values")


# ---- VisualBERT (reference/vlm.py) -------------------------------------------------------------------------


def _visual_bert_models(seed: int):
    """(ours in float64, transformers' VisualBertModel in float64) with the same random weights."""
    config = transformers.VisualBertConfig(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=48, visual_embedding_dim=20, max_position_embeddings=64,
                                           type_vocab_size=2, hidden_dropout_prob=0.0,
                                           attention_probs_dropout_prob=0.0, attn_implementation="eager")
    theirs = randomize_parameters(transformers.VisualBertModel(config).double().eval(), seed)
    ours = VisualBertEncoder(VisualBertConfig(vocab_size=61, hidden_size=32, num_layers=2, num_heads=4,
                                              intermediate_size=48, max_position_embeddings=64, type_vocab_size=2,
                                              visual_embedding_dim=20)).double()
    return ours.copy_from_transformers(theirs), theirs


def _prefix_mask(batch: int, length: int, seed: int) -> torch.Tensor:
    lengths = torch.randint(1, length + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    lengths[0] = length
    return (torch.arange(length)[None, :] < lengths[:, None]).long()


@pytest.mark.parametrize("dtype", DTYPES)
def test_visual_bert_with_triton_matches_transformers(seed, dtype):
    reference, theirs = _visual_bert_models(seed)
    b, nt, nv = 2, 17, 36  # 53 positions, text and region padding both present
    g = torch.Generator().manual_seed(seed)
    inputs = dict(input_ids=torch.randint(0, 61, (b, nt), generator=g), attention_mask=_prefix_mask(b, nt, seed),
                  visual_attention_mask=_prefix_mask(b, nv, seed + 1),
                  token_type_ids=torch.randint(0, 2, (b, nt), generator=g),
                  visual_token_type_ids=torch.randint(0, 2, (b, nv), generator=g))
    visual = random_tensor((b, nv, 20), seed=seed + 2, dtype=torch.float64)
    weights = random_tensor((b, nt + nv, 32), seed=seed + 3, dtype=torch.float64)

    def run(model, cast):
        x = visual.to(cast).requires_grad_()
        out = model(**inputs, visual_embeds=x)
        (grad,) = torch.autograd.grad((out.last_hidden_state * weights.to(cast)).sum(), x)
        return out, grad

    gold, grad_gold = run(reference, torch.float64)
    with torch.no_grad():
        assert_agrees(theirs(**inputs, visual_embeds=visual).last_hidden_state, gold.last_hidden_state, name="oracle")
    baseline, grad_baseline = _baseline(lambda: run(copy.deepcopy(reference).to(dtype), dtype), dtype) or (None, None)
    candidate, grad_candidate = run(with_backend(reference, "triton", dtype), dtype)
    for field in ("last_hidden_state", "pooler_output"):
        assert_agrees(getattr(candidate, field), getattr(gold, field),
                      None if baseline is None else getattr(baseline, field),
                      name=f"VisualBERT {field} backend=triton")
    assert_agrees(grad_candidate, grad_gold, grad_baseline, gradient=True, name="d visual_embeds")


# ---- two-stream co-attention (reference/fusion.py) --------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_co_attention_with_triton_matches_the_reference(seed, dtype):
    """Cross-attention between streams of different widths (head dims 4 and 6: padded to the 16-wide tile) and
    lengths, padding in both. Its oracle (torch.nn modules, layer by layer) is suites/reference/test_fusion.py;
    here gold is the reference stack in float64."""
    config = FusionConfig(vocab_size=37, max_text_length=32, text_dim=16, image_dim=24, num_heads=4, ffn_ratio=2,
                          num_text_layers=1, num_image_layers=1, num_fusion_layers=2, image_feature_dim=12,
                          num_outputs=3, use_position_embeddings=False)
    torch.manual_seed(seed)
    reference = randomize_parameters(CoAttentionTransformer(config).double(), seed)
    text = random_tensor((3, 11, 16), seed=seed, dtype=torch.float64)
    image = random_tensor((3, 7, 24), seed=seed + 1, dtype=torch.float64)
    text_pad, image_pad = _padding(3, 11, seed + 2), _padding(3, 7, seed + 3)
    weights = (random_tensor((3, 11, 16), seed=seed + 4, dtype=torch.float64),
               random_tensor((3, 7, 24), seed=seed + 5, dtype=torch.float64))

    def run(model, cast):
        t, i = text.to(cast).requires_grad_(), image.to(cast).requires_grad_()
        outs = model(t, i, text_padding_mask=text_pad, image_padding_mask=image_pad)
        loss = sum((o * w.to(cast)).sum() for o, w in zip(outs, weights, strict=True))
        return outs, torch.autograd.grad(loss, (t, i))

    gold = run(reference, torch.float64)
    baseline = _baseline(lambda: run(copy.deepcopy(reference).to(dtype), dtype), dtype) or ((None, None), (None, None))
    candidate = run(with_backend(reference, "triton", dtype), dtype)
    for i, name in enumerate(("text", "image")):
        assert_agrees(candidate[0][i], gold[0][i], baseline[0][i], name=f"co-attention {name} stream backend=triton")
        assert_agrees(candidate[1][i], gold[1][i], baseline[1][i], gradient=True, name=f"d {name}")
