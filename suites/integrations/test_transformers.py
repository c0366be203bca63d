"""fusebench/integrations/transformers.py: the Triton attention inside real transformers models.

Tiny models are built offline from configs, every parameter redrawn at random (transformers initialises
norms to 1 and biases to 0, which would hide a mistake that skips them). For each model:

* gold = the model with ``attn_implementation="eager"`` in float64, run on each sequence alone and
  unpadded (a padded batch must compute exactly that on its real tokens; the float64 eager run of a
  left-padded batch is itself NaN-poisoned in models that upcast the softmax to float32, whose fully
  masked rows then meet ``-inf`` everywhere);
* candidate = ``attn_implementation="fusebench"`` on the padded batch, in float32 and bfloat16;
* baseline = ``attn_implementation="eager"`` on the padded batch in the same dtype (plain PyTorch at that
  precision; see ``Case.baseline_impl`` for why not ``"sdpa"``).
Hidden states are compared on real tokens only through the agreement policy. Greedy ``generate()`` of
the decoders must give the tokens of the float64 eager model, prompt by prompt. Each verdict's ratio is
kept with ``record_property("agreement_ratio", ...)`` (``--junitxml`` carries it).
"""

import copy
import warnings
from dataclasses import dataclass, field

import pytest
import torch
import transformers

import fusebench.integrations.transformers as integration
from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor, randomize_parameters
from fusebench.integrations.transformers import (
    fusebench_attention_forward,
    patch_legacy_attention,
    register,
)
from reference.attention import scaled_dot_product_attention

NAME = register()
LOW_PRECISION = [torch.float32, torch.bfloat16]


def _with(model: torch.nn.Module, impl: str, dtype: torch.dtype, device: str = "cpu") -> torch.nn.Module:
    twin = copy.deepcopy(model).to(dtype=dtype, device=device)
    twin.set_attn_implementation(impl)
    return twin


def _ids(seed: int, shape, vocab: int) -> torch.Tensor:
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))  # 0..2: pad/bos/eos


def _padding_mask(lengths, n: int, side: str) -> torch.Tensor:
    """(B, N) long, 1 on real tokens; padding on the left (generation) or the right (encoders)."""
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for row, length in enumerate(lengths):
        if side == "left":
            mask[row, n - length:] = 1
        else:
            mask[row, :length] = 1
    return mask


@dataclass(frozen=True)
class Size:
    """Model and input sizes: ``TINY`` for the CPU interpreter, ``REAL`` for the gpu tier."""

    hidden: int
    layers: int
    heads: int  # BERT/ViT/CLIP/GPT-2 heads; Llama/Mistral use ``gqa_heads``
    gqa_heads: tuple[int, int]  # (query heads, key/value heads)
    ffn: int
    seq: int  # the longest text sequence
    short: int  # the padded sequence's real tokens
    image: int
    patch: int
    window: int  # Mistral's sliding window, shorter than ``seq``
    vocab: int = 101  # prime: not a multiple of any block


TINY = Size(hidden=32, layers=2, heads=2, gqa_heads=(4, 2), ffn=37, seq=13, short=8, image=16, patch=4, window=5)
REAL = Size(hidden=768, layers=4, heads=12, gqa_heads=(12, 4), ffn=3072, seq=1024, short=600, image=224, patch=16,
            window=256)


@dataclass
class Case:
    """A model (float64, eager) and its inputs; ``per_token`` names the inputs cut to a sequence's real tokens."""

    model: torch.nn.Module
    inputs: dict
    mask: torch.Tensor | None = None  # (B, N) 1 = real token; None: no padding
    positions: bool = False  # pass explicit position ids (left padding)
    # The baseline is eager attention, plain PyTorch at the dtype: torch's CPU SDPA is itself a fused float32
    # kernel rounding once, as ours does, so in bfloat16 it often returns our bits exactly and could not tell a
    # kernel re-run from an independent one (the policy refuses such a baseline).
    baseline_impl: str = "eager"
    legacy: bool = False  # attention outside the AttentionInterface: patch_legacy_attention
    per_token: tuple = field(default=("input_ids", "token_type_ids"))


def _bert(seed, size=TINY):
    config = transformers.BertConfig(vocab_size=size.vocab, hidden_size=size.hidden, num_hidden_layers=size.layers,
                                     num_attention_heads=size.heads, intermediate_size=size.ffn,
                                     max_position_embeddings=size.seq, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    ids = _ids(seed, (2, size.seq), size.vocab)
    types = _ids(seed + 1, (2, size.seq), size.vocab) % 2
    return Case(transformers.BertModel(config, add_pooling_layer=False), dict(input_ids=ids, token_type_ids=types),
                _padding_mask([size.seq, size.short], size.seq, "right"))


def _pixels(seed, size):
    return random_tensor((2, 3, size.image, size.image), seed=seed, dtype=torch.float64)


def _vit(seed, size=TINY):
    config = transformers.ViTConfig(image_size=size.image, patch_size=size.patch, hidden_size=size.hidden,
                                    num_hidden_layers=size.layers, num_attention_heads=size.heads,
                                    intermediate_size=size.ffn, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)  # TINY: 16 patches + CLS = 17 tokens
    return Case(transformers.ViTModel(config, add_pooling_layer=False), dict(pixel_values=_pixels(seed, size)))


def _clip_text(seed, size=TINY):
    config = transformers.CLIPTextConfig(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.ffn,
                                         num_hidden_layers=size.layers, num_attention_heads=size.heads,
                                         max_position_embeddings=size.seq)
    return Case(transformers.CLIPTextModel(config), dict(input_ids=_ids(seed, (2, size.seq), size.vocab)),
                _padding_mask([size.seq, size.short], size.seq, "right"))


def _clip_vision(seed, size=TINY):
    config = transformers.CLIPVisionConfig(image_size=size.image, patch_size=size.patch, hidden_size=size.hidden,
                                           intermediate_size=size.ffn, num_hidden_layers=size.layers,
                                           num_attention_heads=size.heads)
    return Case(transformers.CLIPVisionModel(config), dict(pixel_values=_pixels(seed, size)))


def _gpt2_config(size=TINY):
    return transformers.GPT2Config(vocab_size=size.vocab, n_positions=size.seq + 8, n_embd=size.hidden,
                                   n_layer=size.layers, n_head=size.heads, resid_pdrop=0.0, embd_pdrop=0.0,
                                   attn_pdrop=0.0, pad_token_id=0)


def _gpt2(seed, size=TINY):
    return Case(transformers.GPT2Model(_gpt2_config(size)), dict(input_ids=_ids(seed, (2, size.seq), size.vocab)),
                _padding_mask([size.seq, size.short], size.seq, "left"), positions=True)


def _llama_config(size=TINY):
    return transformers.LlamaConfig(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.ffn,
                                    num_hidden_layers=size.layers, num_attention_heads=size.gqa_heads[0],
                                    num_key_value_heads=size.gqa_heads[1], max_position_embeddings=size.seq + 8,
                                    pad_token_id=0)


def _llama(seed, size=TINY):  # query heads share key/value heads: grouped-query attention
    return Case(transformers.LlamaModel(_llama_config(size)), dict(input_ids=_ids(seed, (2, size.seq), size.vocab)),
                _padding_mask([size.seq, size.short], size.seq, "left"), positions=True)


def _mistral(seed, size=TINY):
    config = transformers.MistralConfig(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.ffn,
                                        num_hidden_layers=size.layers, num_attention_heads=size.gqa_heads[0],
                                        num_key_value_heads=size.gqa_heads[1], max_position_embeddings=size.seq,
                                        sliding_window=size.window, pad_token_id=0)  # window < sequence: it masks
    return Case(transformers.MistralModel(config), dict(input_ids=_ids(seed, (2, size.seq), size.vocab)),
                _padding_mask([size.seq, size.short], size.seq, "left"), positions=True)


def _visual_bert(seed, size=TINY):
    config = transformers.VisualBertConfig(vocab_size=size.vocab, hidden_size=size.hidden, visual_embedding_dim=12,
                                           num_hidden_layers=size.layers, num_attention_heads=size.heads,
                                           intermediate_size=size.ffn, max_position_embeddings=size.seq,
                                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    inputs = dict(input_ids=_ids(seed, (2, size.seq), size.vocab),
                  visual_embeds=random_tensor((2, 5, 12), seed=seed + 1, dtype=torch.float64))
    return Case(transformers.VisualBertModel(config, add_pooling_layer=False), inputs,
                _padding_mask([size.seq, size.short], size.seq, "right"), legacy=True)


MODELS = {
    "bert": _bert, "vit": _vit, "clip_text": _clip_text, "clip_vision": _clip_vision, "gpt2": _gpt2,
    "llama": _llama,  # rotary embeddings, grouped-query attention, causal
    "mistral": _mistral,  # sliding-window attention, carried by the mask
    "visual_bert": _visual_bert,  # ignores the AttentionInterface: patch_legacy_attention
}


def _forward(model: torch.nn.Module, case: Case, rows: slice, mask: torch.Tensor | None, alone: bool = False):
    """last_hidden_state of rows of the batch; ``alone``: one sequence cut to its real tokens, unpadded."""
    return _model_output(model, case, rows, mask, alone).last_hidden_state


def _model_output(model: torch.nn.Module, case: Case, rows: slice, mask: torch.Tensor | None, alone: bool = False,
                  **model_kwargs):
    """The model's whole output on rows of the batch (see ``_forward``); ``model_kwargs`` go to the call."""
    inputs = {k: v[rows] for k, v in case.inputs.items()}
    weight = next(model.parameters())
    inputs = {k: (v.to(weight.dtype) if v.is_floating_point() else v).to(weight.device) for k, v in inputs.items()}
    if alone:  # one sequence: its real tokens, no mask
        real = mask[rows][0].bool().to(weight.device)
        inputs = {k: v[:, real] if k in case.per_token else v for k, v in inputs.items()}
        mask = None
    if mask is not None:
        inputs["attention_mask"] = mask[rows].to(weight.device)
        if case.positions:
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(**inputs, **model_kwargs)


def _extra_tokens(case: Case) -> int:
    # VisualBERT appends the visual tokens after the text; they are never padding.
    return case.inputs["visual_embeds"].shape[1] if "visual_embeds" in case.inputs else 0


def _gold_on_real_tokens(case: Case, gold_model) -> torch.Tensor:
    """Each sequence alone, unpadded, in float64 eager: the hidden states of its real tokens, concatenated."""
    if case.mask is None:
        return _forward(gold_model, case, slice(None), None).flatten(0, 1)
    golds = []
    for row in range(case.mask.shape[0]):
        golds.append(_forward(gold_model, case, slice(row, row + 1), case.mask, alone=True)[0])
    return torch.cat(golds)


def _real_tokens(hidden: torch.Tensor, case: Case) -> torch.Tensor:
    if case.mask is None:
        return hidden.flatten(0, 1)
    real = torch.cat([case.mask.bool(), torch.ones(case.mask.shape[0], _extra_tokens(case), dtype=torch.bool)], 1)
    return hidden[real.to(hidden.device)]


@pytest.fixture
def kernel_calls(monkeypatch) -> list:
    """Counts the Triton kernel calls the integration makes: proof that the candidate ran on the kernel
    (a model that ignored the interface would run eager attention and agree trivially)."""
    calls = []
    kernel = integration.attention

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(integration, "attention", counted)
    return calls


def _check_hidden_states(seed, model_name, dtype, size, device, kernel_calls, padded=True):
    case = MODELS[model_name](seed, size)
    if not padded:
        case.mask = None
    case.model = randomize_parameters(case.model.double().eval(), seed, unit_scale=("embed",))
    gold = _gold_on_real_tokens(case, _with(case.model, "eager", torch.float64, device))
    baseline = _forward(_with(case.model, case.baseline_impl, dtype, device), case, slice(None), case.mask)
    fused = _with(case.model, NAME, dtype, device)
    if case.legacy:
        assert patch_legacy_attention(fused) == case.model.config.num_hidden_layers
    candidate = _forward(fused, case, slice(None), case.mask)
    assert len(kernel_calls) == case.model.config.num_hidden_layers, "one kernel call per layer"
    return assert_agrees(_real_tokens(candidate, case), gold, _real_tokens(baseline, case),
                         name=f"{model_name} last_hidden_state")


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_hidden_states_agree_with_eager_float64(seed, model_name, dtype, record_property, kernel_calls):
    verdict = _check_hidden_states(seed, model_name, dtype, TINY, "cpu", kernel_calls)
    record_property("agreement_ratio", verdict.ratio)


@pytest.mark.parametrize("model_name", ["clip_text", "llama"])
def test_causal_models_without_padding(seed, model_name, kernel_calls):
    """No padding: transformers passes no mask at all, and causality only through ``is_causal`` (CLIP's text
    encoder as an argument, Llama through ``module.is_causal``)."""
    _check_hidden_states(seed, model_name, torch.float32, TINY, "cpu", kernel_calls, padded=False)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_hidden_states_agree_with_eager_float64_at_real_sizes(seed, model_name, dtype, record_property,
                                                              kernel_calls):
    """768 wide, 12 heads (Llama/Mistral: 12 query, 4 key/value), 4 layers, 1024 tokens, 224x224 images."""
    verdict = _check_hidden_states(seed, model_name, dtype, REAL, "cuda", kernel_calls)
    record_property("agreement_ratio", verdict.ratio)


def _generate(model, ids, mask, new_tokens):
    """Greedy decoding: the new tokens (B, T) and the logits of every step (B, T, V)."""
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             min_new_tokens=new_tokens, pad_token_id=0, return_dict_in_generate=True,
                             output_logits=True)
    return out.sequences[:, ids.shape[1]:], torch.stack(out.logits, dim=1)


def _check_generate(seed, model_name, padded, size, device, prompt, new_tokens, kernel_calls):
    """Same tokens as float64 eager, prompt by prompt, and the logits of every step agree (prefill and KV-cache
    decoding: tiny random models often pick the same token whatever the attention does, the logits do not)."""
    if model_name == "gpt2":
        model = transformers.GPT2LMHeadModel(_gpt2_config(size))
    else:
        model = transformers.LlamaForCausalLM(_llama_config(size))
    model = randomize_parameters(model.double().eval(), seed, unit_scale=("embed",))
    lengths = [prompt, prompt * 2 // 3] if padded else [prompt]  # one prompt: no mask, the mask-free paths
    mask = _padding_mask(lengths, prompt, "left").to(device)
    ids = _ids(seed, (len(lengths), prompt), size.vocab).to(device).masked_fill(mask == 0, 0)
    batch_mask = mask if padded else None
    tokens, logits = _generate(_with(model, NAME, torch.float32, device), ids, batch_mask, new_tokens)
    query_lengths = [shape[2] for shape in kernel_calls]  # every layer: the prompt once, then one token per step
    assert query_lengths == [prompt] * size.layers + [1] * size.layers * (new_tokens - 1), query_lengths
    _, baseline_logits = _generate(_with(model, "sdpa", torch.float32, device), ids, batch_mask, new_tokens)
    gold_model = _with(model, "eager", torch.float64, device)
    ratios = []
    for row, length in enumerate(lengths):
        alone = ids[row:row + 1, prompt - length:]
        gold_tokens, _ = _generate(gold_model, alone, None, new_tokens)
        assert tokens[row].tolist() == gold_tokens[0].tolist(), (
            f"prompt {row}: fusebench float32 {tokens[row].tolist()} != eager float64 {gold_tokens[0].tolist()}")
        with torch.no_grad():  # generate() returns float32 logits; the float64 ones by teacher forcing
            gold_logits = gold_model(input_ids=torch.cat([alone, gold_tokens[:, :-1]], 1)).logits[0, -new_tokens:]
        verdict = assert_agrees(logits[row], gold_logits, baseline_logits[row], name=f"prompt {row} logits")
        ratios.append(verdict.ratio)
    return max(ratios)


@pytest.mark.parametrize("model_name", ["gpt2", "llama"])
@pytest.mark.parametrize("padded", [False, True], ids=["one_prompt", "left_padded_batch"])
def test_greedy_generate_gives_the_float64_tokens(seed, model_name, padded, record_property, kernel_calls):
    ratio = _check_generate(seed, model_name, padded, TINY, "cpu", prompt=8, new_tokens=5, kernel_calls=kernel_calls)
    record_property("agreement_ratio", ratio)


@pytest.mark.gpu
@pytest.mark.parametrize("model_name", ["gpt2", "llama"])
@pytest.mark.parametrize("padded", [False, True], ids=["one_prompt", "left_padded_batch"])
def test_greedy_generate_gives_the_float64_tokens_at_real_sizes(seed, model_name, padded, record_property,
                                                                kernel_calls):
    ratio = _check_generate(seed, model_name, padded, REAL, "cuda", prompt=500, new_tokens=24,
                            kernel_calls=kernel_calls)
    record_property("agreement_ratio", ratio)


def test_training_gradients_agree_with_eager_float64(seed, record_property):
    """The kernel's backward inside BERT (dropout 0, train mode): gradients of the inputs and of the first layer's
    query/key/value weights, with a padded row; the loss weighs real tokens only, by random weights."""
    case = _bert(seed)
    case.model = randomize_parameters(case.model.double(), seed, unit_scale=("embed",)).train()
    embeds = random_tensor((2, TINY.seq, TINY.hidden), seed=seed + 5, dtype=torch.float64)
    weights = random_tensor((2, TINY.seq, TINY.hidden), seed=seed + 6, dtype=torch.float64) * case.mask[..., None]

    def gradients(impl, dtype):
        model = _with(case.model, impl, dtype)
        x = embeds.to(dtype).clone().requires_grad_()  # a fresh leaf per run
        hidden = model(inputs_embeds=x, attention_mask=case.mask).last_hidden_state
        (hidden * weights.to(dtype)).sum().backward()
        layer = model.encoder.layer[0].attention.self
        projections = {name: getattr(layer, name).weight.grad for name in ("query", "key", "value")}
        return {"inputs_embeds": x.grad, **projections}

    gold, baseline = gradients("eager", torch.float64), gradients("sdpa", torch.float32)
    candidate = gradients(NAME, torch.float32)
    ratios = [assert_agrees(candidate[name], gold[name], baseline[name], gradient=True, name=f"d {name}").ratio
              for name in gold]
    record_property("agreement_ratio", max(ratios))


# --------------------------------------------------------------------------------------------------
# The interface function itself: masks, causality, scaling, grouped-query attention
# --------------------------------------------------------------------------------------------------


class _Module(torch.nn.Module):
    """What the attention function reads from the module: ``is_causal`` (and ``training``)."""

    def __init__(self, is_causal: bool):
        super().__init__()
        self.is_causal = is_causal


def _qkv(seed, b, hq, hkv, nq, nk, d, dtype=torch.float32):
    return (random_tensor((b, hq, nq, d), seed=seed, dtype=dtype), random_tensor((b, hkv, nk, d), seed=seed + 1,
            dtype=dtype), random_tensor((b, hkv, nk, d), seed=seed + 2, dtype=dtype))


def _check(out, q, k, v, **reference_kwargs):
    """out (B, N, H, D) from the interface against the reference seam (float64 gold, float32 baseline)."""
    gold = scaled_dot_product_attention(q.double(), k.double(), v.double(), **reference_kwargs)
    baseline = scaled_dot_product_attention(q, k, v, **reference_kwargs)
    return assert_agrees(out.transpose(1, 2), gold, baseline)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_4d_masks_with_grouped_query_heads(seed, kind):
    q, k, v = _qkv(seed, 2, 4, 2, 19, 19, 16)  # 19: not a multiple of the 16-wide tile
    keep = torch.rand(2, 1, 19, 19, generator=torch.Generator().manual_seed(seed)) < 0.7
    keep[..., 0] = True
    mask = keep if kind == "bool" else torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    out, weights = fusebench_attention_forward(_Module(is_causal=True), q, k, v, mask, scaling=0.3)
    assert weights is None and out.shape == (2, 19, 4, 16) and out.is_contiguous()
    _check(out, q, k, v, attn_mask=keep, scale=0.3)  # a given mask carries causality: no extra causal mask


def test_causal_without_mask_is_top_left_and_a_single_query_sees_every_key(seed):
    q, k, v = _qkv(seed, 1, 2, 2, 7, 12, 16)  # prefill into a longer (static) cache: 5 unwritten keys
    out, _ = fusebench_attention_forward(_Module(is_causal=True), q, k, v, None)
    _check(out, q, k[:, :, :7], v[:, :, :7], is_causal=True)
    out, _ = fusebench_attention_forward(_Module(is_causal=False), q, k, v, None, is_causal=True)  # argument wins
    _check(out, q, k[:, :, :7], v[:, :, :7], is_causal=True)
    out, _ = fusebench_attention_forward(_Module(is_causal=True), q[:, :, -1:], k, v, None)  # decoding
    _check(out, q[:, :, -1:], k, v)
    out, _ = fusebench_attention_forward(_Module(is_causal=False), q, k, v, None)  # encoder
    _check(out, q, k, v)


def test_left_padding_rows_give_zeros_not_nan(seed):
    q, k, v = _qkv(seed, 2, 2, 2, 6, 6, 16)
    real = _padding_mask([6, 4], 6, "left").bool()
    keep = real[:, None, None, :] & torch.ones(6, 6, dtype=torch.bool).tril()  # what transformers builds
    out, _ = fusebench_attention_forward(_Module(is_causal=True), q, k, v, keep)
    assert torch.equal(out[1, :2], torch.zeros_like(out[1, :2]))  # pad queries see only pad keys
    _check(out, q, k, v, attn_mask=keep)


# --------------------------------------------------------------------------------------------------
# What the kernel does not support raises, naming the feature
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(dropout=0.1), r"attention dropout \(dropout=0.1"),
    (dict(softcap=50.0), r"soft-capping \(softcap=50.0\)"),
    (dict(s_aux=torch.zeros(2)), r"attention sinks"),
    (dict(position_bias=torch.zeros(1, 2, 4, 4)), r"position bias"),
    (dict(sliding_window=3), r"sliding window \(3\) without an attention mask"),
])
def test_unsupported_features_raise_naming_them(seed, kwargs, message):
    q, k, v = _qkv(seed, 1, 2, 2, 4, 4, 16)
    with pytest.raises(NotImplementedError, match=message):
        fusebench_attention_forward(_Module(is_causal=True), q, k, v, None, **kwargs)


def test_unsupported_dtypes_head_dims_and_masks_raise(seed):
    q, k, v = _qkv(seed, 1, 2, 2, 4, 4, 16, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match=r"dtype torch.float64"):
        fusebench_attention_forward(_Module(False), q, k, v, None)
    q, k, v = _qkv(seed, 1, 1, 1, 2, 2, 320)
    with pytest.raises(NotImplementedError, match=r"head dimension 320 \(the kernel supports up to 256\)"):
        fusebench_attention_forward(_Module(False), q, k, v, None)
    q, k, v = _qkv(seed, 1, 2, 2, 4, 4, 16)
    with pytest.raises(NotImplementedError, match=r"attention mask of type list"):
        fusebench_attention_forward(_Module(False), q, k, v, [[True]])


def test_models_raise_for_dropout_in_training_and_softcapping(seed):
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=101, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        attention_probs_dropout_prob=0.1, attn_implementation=NAME))
    ids = _ids(seed, (1, 5), 101)
    with pytest.raises(NotImplementedError, match=r"attention dropout \(dropout=0.1 in training mode"):
        bert.train()(input_ids=ids)
    gemma = transformers.Gemma2Model(transformers.Gemma2Config(
        vocab_size=101, hidden_size=32, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, attn_logit_softcapping=50.0, attn_implementation=NAME)).eval()
    with pytest.raises(NotImplementedError, match=r"soft-capping \(softcap=50.0\)"):
        gemma(input_ids=ids)


@pytest.mark.parametrize("model_name", ["bert", "llama", "visual_bert"])
def test_output_attentions_gives_none_with_one_warning_as_sdpa_does(seed, model_name, kernel_calls, monkeypatch):
    """transformers' own fused implementations ("sdpa", flash attention) answer ``output_attentions=True`` with a
    warning and ``None`` attentions, so models and transformers' common tests that ask for them still run; so does
    "fusebench", and the hidden states are still the kernel's (VisualBERT: its layer reads the tuple's second item)."""
    monkeypatch.setattr(integration, "_WARNED_NO_ATTENTION_WEIGHTS", [])
    case = MODELS[model_name](seed, TINY)
    case.model = randomize_parameters(case.model.double().eval(), seed, unit_scale=("embed",))
    fused = _with(case.model, NAME, torch.float32)
    if case.legacy:
        patch_legacy_attention(fused)
    with pytest.warns(UserWarning, match=r"never forms the attention probabilities.*attentions are None"):
        out = _model_output(fused, case, slice(None), case.mask, output_attentions=True)
    layers = case.model.config.num_hidden_layers
    assert len(kernel_calls) == layers, "the kernel ran every layer"
    weightless = case.baseline_impl if case.legacy else "sdpa"  # transformers' own implementation without weights
    baseline = _model_output(_with(case.model, weightless, torch.float32), case, slice(None), case.mask,
                             output_attentions=True)
    if case.legacy:  # VisualBERT's own layers keep one entry per layer
        assert out.attentions == (None,) * layers
    else:  # what transformers makes of an implementation without weights: exactly what "sdpa" gets
        assert out.attentions == baseline.attentions and not any(a is not None for a in out.attentions)
    gold = _gold_on_real_tokens(case, _with(case.model, "eager", torch.float64))
    assert_agrees(_real_tokens(out.last_hidden_state, case), gold, _real_tokens(baseline.last_hidden_state, case),
                  name=f"{model_name} last_hidden_state with output_attentions=True")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model_output(fused, case, slice(None), case.mask, output_attentions=True)
    assert not [w for w in caught if "attention probabilities" in str(w.message)], "warned once per process"


def test_composite_models_dispatch_every_tower_to_the_kernel(seed, kernel_calls, tmp_path):
    """transformers' dispatch tests for composite models (test_can_set_attention_dynamically_composite_model,
    test_sdpa_can_dispatch_composite_models) ask this of "sdpa"; here of "fusebench": set on the model, it reaches
    every sub-config, survives save/from_pretrained, can be chosen per tower, and both CLIP towers run the kernel."""
    text = transformers.CLIPTextConfig(vocab_size=TINY.vocab, hidden_size=TINY.hidden, intermediate_size=TINY.ffn,
                                       num_hidden_layers=1, num_attention_heads=TINY.heads)
    vision = transformers.CLIPVisionConfig(image_size=TINY.image, patch_size=TINY.patch, hidden_size=TINY.hidden,
                                           intermediate_size=TINY.ffn, num_hidden_layers=2,
                                           num_attention_heads=TINY.heads)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                                           projection_dim=16)).eval()
    model.set_attn_implementation(NAME)
    towers = lambda m: [m.config, m.text_model.config, m.vision_model.config]  # noqa: E731
    assert [c._attn_implementation for c in towers(model)] == [NAME] * 3
    model.save_pretrained(tmp_path)
    loaded = transformers.CLIPModel.from_pretrained(tmp_path, attn_implementation=NAME).eval()
    assert [c._attn_implementation for c in towers(loaded)] == [NAME] * 3
    mixed = transformers.CLIPModel.from_pretrained(tmp_path, attn_implementation={"text_config": NAME,
                                                                                   "vision_config": "eager"})
    assert [mixed.text_model.config._attn_implementation, mixed.vision_model.config._attn_implementation] == [
        NAME, "eager"]
    with torch.no_grad():
        loaded(input_ids=_ids(seed, (2, 5), TINY.vocab), pixel_values=_pixels(seed, TINY).float())
    assert len(kernel_calls) == 1 + 2, "one kernel call per text layer and per vision layer"


def test_register_and_patch_validate_their_arguments():
    for bad in ("", "sdpa", "eager", "flash_attention_2", 3):
        with pytest.raises(ValueError, match="name must be a new attention implementation name"):
            register(bad)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        patch_legacy_attention("bert")
    vit = transformers.ViTModel(transformers.ViTConfig(image_size=8, patch_size=4, hidden_size=16,
                                                       num_hidden_layers=1, num_attention_heads=2,
                                                       intermediate_size=16))
    with pytest.raises(ValueError, match="ViTModel has no self-attention module of a known legacy class"):
        patch_legacy_attention(vit)
