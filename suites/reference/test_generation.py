"""reference/generation.py against transformers.GPT2LMHeadModel (tiny config, weights copied), and its sampling rules.

* Logits: gold = our model in float64; candidate = GPT-2 in the dtype under test; baseline = ours in that dtype.
* Greedy tokens: identical to ``GPT2LMHeadModel.generate(do_sample=False)``, with and without left padding.
* KV cache: cached decoding agrees with recomputing the whole sequence, at every step.
* Sampling: reproducible from a ``torch.Generator``; top-k and top-p draws stay inside the allowed set computed
  here independently, and their frequencies match the renormalized distribution; temperature -> 0 is greedy.
"""

import copy
import math

import pytest
import torch
import transformers
from oracle_pairs import gpt2_config, gpt2_pair

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.generation import DecoderLM, DecoderLMConfig, next_token

VOCAB = 97  # not a power of two
CONTEXT = 40
WEIGHT_SCALE = 0.5  # N(0, 0.5) weights: next-token entropy ~2.9 nats of log(97) = 4.6, neither flat nor one-hot


def _gpt2_config(**overrides) -> transformers.GPT2Config:
    return gpt2_config(VOCAB, CONTEXT, 32, **overrides)


def _models(seed: int, backend: str = "reference") -> tuple[transformers.GPT2LMHeadModel, DecoderLM]:
    """GPT-2 with fresh random weights (LayerNorms included) in float64, and our model with them copied."""
    return gpt2_pair(seed, vocab_size=VOCAB, context=CONTEXT, width=32, weight_scale=WEIGHT_SCALE, backend=backend)


def _token_ids(shape, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def _left_padding(batch: int, length: int, seed: int) -> torch.Tensor:
    """``(B, N)`` int mask, 1 = token: row 0 unpadded, every other row padded (random prompt lengths in [1, N))."""
    lengths = torch.randint(1, length, (batch,), generator=torch.Generator().manual_seed(seed))
    lengths[0] = length
    return (torch.arange(length)[None, :] >= length - lengths[:, None]).long()


# --------------------------------------------------------------------------------------------------
# The model against GPT-2
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("length", [1, 23, CONTEXT])  # one token; odd length; the full context
def test_logits_match_gpt2(seed, dtype, length):
    theirs, ours = _models(seed)
    ids = _token_ids((3, length), seed)
    gold = ours(ids)
    baseline = ours.to(dtype)(ids)
    candidate = theirs.to(dtype)(ids).logits
    assert_agrees(candidate, gold, baseline, name="GPT2LMHeadModel logits")


def test_lm_head_is_tied_to_the_token_embeddings(seed):
    _, ours = _models(seed)
    ids = _token_ids((2, 5), seed)
    ours(ids).sum().backward()
    assert ours.token_embedding.weight.grad is not None
    unused = torch.ones(VOCAB, dtype=torch.bool)
    unused[ids.unique()] = False
    # Rows of tokens absent from the input still get gradient, through the LM head only.
    assert (ours.token_embedding.weight.grad[unused].abs().sum(dim=-1) > 0).all()
    assert not any(p.shape == (VOCAB, 32) for name, p in ours.named_parameters() if name != "token_embedding.weight")


@pytest.mark.parametrize("backend", ["sdpa"])
def test_backend_is_passed_down_to_attention(seed, backend):
    _, ours = _models(seed)
    _, other = _models(seed, backend=backend)
    ids = _token_ids((2, 17), seed)
    assert_agrees(other(ids), ours(ids), name=f"backend={backend}")
    _, broken = _models(seed, backend="no-such-backend")
    with pytest.raises(ValueError, match="backend must be one of"):
        broken(ids)


# Greedy decoding is compared in float64: a float32 argmax may legitimately flip where the two best logits
# differ by less than float32's rounding, which is not a disagreement about the function.
@pytest.mark.parametrize("prompt_shape", [(1, 1), (1, 9), (3, 14)], ids=["one-token", "one-prompt", "batch"])
def test_greedy_tokens_equal_gpt2_generate(seed, prompt_shape):
    theirs, ours = _models(seed)
    ids = _token_ids(prompt_shape, seed)
    new = CONTEXT - prompt_shape[1]  # run up to the full context
    expected = theirs.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False)
    assert torch.equal(ours.generate(ids, new), expected)


def test_greedy_tokens_equal_gpt2_generate_with_left_padding(seed):
    theirs, ours = _models(seed)
    mask = _left_padding(4, 11, seed)
    ids = _token_ids((4, 11), seed).masked_fill(mask == 0, 0)  # pad id 0
    expected = theirs.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=False)
    assert torch.equal(ours.generate(ids, 15, attention_mask=mask), expected)
    assert (mask == 0).any(), "the batch must actually hold padding"


def test_left_padded_row_generates_what_the_prompt_alone_generates(seed):
    _, ours = _models(seed)
    mask = _left_padding(3, 12, seed)
    ids = _token_ids((3, 12), seed).masked_fill(mask == 0, 5)  # an arbitrary pad id: it must not matter
    batched = ours.generate(ids, 10, attention_mask=mask)
    for row in range(3):
        prompt = ids[row : row + 1, mask[row] == 1]
        assert torch.equal(batched[row, 12:], ours.generate(prompt, 10)[0, prompt.shape[1] :])


# --------------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("padded", [False, True])
def test_cached_decoding_equals_full_recomputation_at_every_step(seed, dtype, padded):
    _, ours = _models(seed)
    batch, prompt, steps = 3, 7, 12
    sequence = _token_ids((batch, prompt + steps), seed)
    mask = torch.ones_like(sequence)
    if padded:
        mask[:, :prompt] = _left_padding(batch, prompt, seed)
    low = copy.deepcopy(ours).to(dtype)
    cache = low.new_cache()
    cached = low(sequence[:, :prompt], attention_mask=mask[:, :prompt], cache=cache)[:, -1]  # prefill
    for step in range(steps + 1):
        end = prompt + step
        gold = ours(sequence[:, :end], attention_mask=mask[:, :end])[:, -1]
        baseline = low(sequence[:, :end], attention_mask=mask[:, :end])[:, -1]
        assert_agrees(cached, gold, baseline, name=f"cached logits at step {step}")
        assert cache.length == end
        if step < steps:
            cached = low(sequence[:, end : end + 1], attention_mask=mask[:, : end + 1], cache=cache)[:, -1]


def test_generate_with_and_without_cache_draws_the_same_tokens(seed):
    _, ours = _models(seed)
    ids = _token_ids((2, 6), seed)
    options = dict(do_sample=True, temperature=1.3, top_k=20, top_p=0.9)
    with_cache = ours.generate(ids, 20, generator=torch.Generator().manual_seed(seed), **options)
    without = ours.generate(ids, 20, generator=torch.Generator().manual_seed(seed), use_cache=False, **options)
    assert torch.equal(with_cache, without)


def test_a_prefix_of_token_embeddings_acts_as_those_tokens(seed):
    _, ours = _models(seed)
    head, ids = _token_ids((2, 5), seed), _token_ids((2, 4), seed + 1)
    prefix = ours.token_embedding(head).detach()  # (B, 5, E): a continuous prompt that happens to be tokens
    expected = ours.generate(torch.cat([head, ids], dim=1), 12)[:, 5:]
    assert torch.equal(ours.generate(ids, 12, prefix_embeds=prefix), expected)
    assert torch.equal(ours.generate(ids, 12, prefix_embeds=prefix, use_cache=False), expected)
    assert torch.equal(ours.generate(ids[:, :0], 12, prefix_embeds=prefix), ours.generate(head, 12)[:, 5:])


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def test_sampling_is_reproducible_with_a_generator_and_changes_with_the_seed(seed):
    _, ours = _models(seed)
    ids = _token_ids((4, 5), seed)

    def sample(s):
        return ours.generate(ids, 30, do_sample=True, generator=torch.Generator().manual_seed(s))

    assert torch.equal(sample(seed), sample(seed))
    # 120 draws at ~2.9 nats each: two seeds agree on all of them with probability far below 1e-30.
    assert not torch.equal(sample(seed), sample(seed + 1))
    assert not torch.equal(sample(seed), ours.generate(ids, 30)), "sampling must not be greedy"


DRAWS = 20_000


def _draws(logits: torch.Tensor, seed: int, **options) -> torch.Tensor:
    """``DRAWS`` independent draws of the next token from one row of logits."""
    rows = logits.expand(DRAWS, -1)
    return next_token(rows, do_sample=True, generator=torch.Generator().manual_seed(seed), **options)


def _assert_frequencies_match(draws: torch.Tensor, probs: torch.Tensor) -> None:
    """Every token's count within 5 standard deviations (+3 draws) of its expected count under ``probs``.

    5 sigma alone keeps the false alarms below 1e-6 per token where the count is near normal; the 3 extra draws
    cover the heavier Poisson tail of rare tokens (expected 0.2 draws: 6 or more happen with probability 1e-7).
    Draws outside the allowed set are caught exactly by the callers, not here.
    """
    n = draws.numel()
    counts = torch.bincount(draws, minlength=probs.numel()).double()
    allowed = 5 * (n * probs * (1 - probs)).sqrt() + 3
    worst = int(((counts - n * probs).abs() - allowed).argmax())
    assert ((counts - n * probs).abs() <= allowed).all(), (
        f"token {worst}: drawn {int(counts[worst])} times, expected {n * probs[worst]:.1f}")


def _top_k_set(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (V,): the k largest logits, found by ranking each token (random logits have no ties)."""
    rank = (logits[None, :] > logits[:, None]).sum(dim=1)  # how many logits beat each token
    return rank < k


def _nucleus(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Boolean (V,): tokens whose strictly more probable tokens hold less than p (Holtzman et al. 2020)."""
    mass_above = (probs[None, :] * (probs[None, :] > probs[:, None])).sum(dim=1)
    return mass_above < p


@pytest.mark.parametrize("k", [1, 5, VOCAB - 1])
@pytest.mark.parametrize("temperature", [0.6, 1.7])
def test_top_k_draws_stay_in_the_k_largest_logits(seed, k, temperature):
    logits = random_tensor((1, VOCAB), seed=seed, dtype=torch.float64, scale=2.0)
    allowed = _top_k_set(logits[0], k)
    draws = _draws(logits, seed, temperature=temperature, top_k=k)
    assert allowed[draws].all(), f"drew {draws[~allowed[draws]].unique().tolist()} outside the top {k}"
    probs = torch.where(allowed, (logits[0] / temperature).exp(), 0.0)
    _assert_frequencies_match(draws, probs / probs.sum())


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 1.0])  # 0.05: only the most probable token
def test_top_p_draws_stay_in_the_nucleus(seed, p):
    logits = random_tensor((1, VOCAB), seed=seed, dtype=torch.float64, scale=2.0)
    temperature = 0.8
    probs = torch.softmax(logits[0] / temperature, dim=0)
    allowed = _nucleus(probs, p)
    draws = _draws(logits, seed, temperature=temperature, top_p=p)
    assert allowed[draws].all(), f"drew {draws[~allowed[draws]].unique().tolist()} outside the nucleus"
    assert allowed.all() if p == 1.0 else allowed.any()
    kept = torch.where(allowed, probs, 0.0)
    _assert_frequencies_match(draws, kept / kept.sum())


def test_top_k_then_top_p_draws_stay_in_the_nucleus_of_the_top_k(seed):
    logits = random_tensor((1, VOCAB), seed=seed, dtype=torch.float64, scale=2.0)
    top_k = _top_k_set(logits[0], 10)
    probs = torch.where(top_k, logits[0].exp(), 0.0)
    probs = probs / probs.sum()
    allowed = _nucleus(probs, 0.7) & top_k
    draws = _draws(logits, seed, top_k=10, top_p=0.7)
    assert allowed[draws].all()
    kept = torch.where(allowed, probs, 0.0)
    _assert_frequencies_match(draws, kept / kept.sum())


@pytest.mark.parametrize("options", [dict(top_k=3), dict(top_p=0.6)], ids=["top-k", "top-p"])
def test_generated_tokens_stay_in_the_allowed_set_at_every_step(seed, options):
    _, ours = _models(seed)
    prompt = 4
    tokens = ours.generate(_token_ids((6, prompt), seed), 25, do_sample=True,
                           generator=torch.Generator().manual_seed(seed), **options)
    logits = ours(tokens)[:, prompt - 1 : -1]  # (B, 25, V): the logits each new token was drawn from
    for row in range(tokens.shape[0]):
        for step in range(25):
            step_logits, drawn = logits[row, step], tokens[row, prompt + step]
            if "top_k" in options:
                allowed = _top_k_set(step_logits, options["top_k"])
            else:
                allowed = _nucleus(torch.softmax(step_logits, dim=0), options["top_p"])
            assert allowed[drawn], f"row {row} step {step}: token {int(drawn)} is outside the allowed set"


def test_temperature_to_zero_is_greedy(seed):
    _, ours = _models(seed)
    ids = _token_ids((3, 5), seed)
    # At temperature 1e-10 a token other than the argmax is drawn with probability below exp(-30) unless the two
    # best logits lie within 3e-9 of each other; logits spread over O(1) do that with probability ~1e-8 a step.
    cold = ours.generate(ids, 30, do_sample=True, temperature=1e-10, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(cold, ours.generate(ids, 30))
    logits = random_tensor((500, VOCAB), seed=seed, dtype=torch.float64)
    sampled = next_token(logits, do_sample=True, temperature=1e-10, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(sampled, logits.argmax(dim=-1))


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    (dict(top_k=0), "top_k must be an integer >= 1"),
    (dict(top_k=-3), "top_k must be an integer >= 1"),
    (dict(top_k=2.5), "top_k must be an integer >= 1"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(top_p=-0.1), r"top_p must be in \(0, 1\]"),
    (dict(temperature=0.0), "temperature must be a positive finite number"),
    (dict(temperature=-1.0), "temperature must be a positive finite number"),
    (dict(temperature=math.nan), "temperature must be a positive finite number"),
])
def test_bad_sampling_arguments_are_rejected(seed, options, message):
    _, ours = _models(seed)
    ids = _token_ids((1, 3), seed)
    with pytest.raises(ValueError, match=message):
        ours.generate(ids, 2, do_sample=True, **options)
    with pytest.raises(ValueError, match=message):
        next_token(random_tensor((1, VOCAB), seed=seed), do_sample=True, **options)


def test_prompts_longer_than_the_context_are_rejected(seed):
    _, ours = _models(seed)
    with pytest.raises(ValueError, match="input_ids: the prompt .* is longer than the context_length 40"):
        ours.generate(_token_ids((1, CONTEXT + 1), seed), 1)
    with pytest.raises(ValueError, match="max_new_tokens: .* exceed the context_length 40"):
        ours.generate(_token_ids((1, 30), seed), 11)
    with pytest.raises(ValueError, match="input_ids: 41 new tokens after 0 cached exceed the context_length"):
        ours(_token_ids((1, CONTEXT + 1), seed))
    cache = ours.new_cache()
    ours(_token_ids((1, 39), seed), cache=cache)
    with pytest.raises(ValueError, match="2 new tokens after 39 cached exceed"):
        ours(_token_ids((1, 2), seed), cache=cache)


def test_bad_token_ids_and_masks_are_rejected(seed):
    _, ours = _models(seed)
    ids = _token_ids((2, 6), seed)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 97\)"):
        ours(ids + VOCAB)
    with pytest.raises(TypeError, match="input_ids must be an integer tensor of token ids"):
        ours.generate(ids.double(), 1)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, N\)"):
        ours.generate(ids[0], 1)
    with pytest.raises(ValueError, match="pass exactly one of input_ids and inputs_embeds"):
        ours()
    right_padded = torch.ones_like(ids)
    right_padded[0, -2:] = 0
    with pytest.raises(ValueError, match="attention_mask: prompts must be left-padded"):
        ours.generate(ids, 1, attention_mask=right_padded)
    holes = torch.ones_like(ids)
    holes[1, 2] = 0
    with pytest.raises(ValueError, match="attention_mask: padding must come before the tokens"):
        ours.generate(ids, 1, attention_mask=holes)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, N_cached \+ N\)"):
        ours(ids, attention_mask=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="attention_mask must be a bool or integer tensor"):
        ours(ids, attention_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer"):
        ours.generate(ids, -1)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, N\) with N >= 1"):
        ours.generate(ids[:, :0], 3)  # an empty prompt needs prefix_embeds
    with pytest.raises(ValueError, match=r"prefix_embeds must have shape \(B, P, E\) = \(2, P, 32\)"):
        ours.generate(ids, 3, prefix_embeds=random_tensor((3, 4, 32), seed=seed, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(B, N, 32\)"):
        ours(inputs_embeds=random_tensor((2, 4, 31), seed=seed, dtype=torch.float64))
    with pytest.raises(ValueError, match="cache must have 2 layers, got 3"):
        ours(ids, cache=DecoderLM(DecoderLMConfig(vocab_size=VOCAB, context_length=CONTEXT, d_model=32,
                                                  num_layers=3, num_heads=4)).new_cache())


def test_gpt2_options_the_model_lacks_are_rejected(seed):
    with pytest.raises(ValueError, match="GPT2Config.scale_attn_by_inverse_layer_idx=True is not supported"):
        DecoderLMConfig.from_gpt2(_gpt2_config(scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ValueError, match="GPT2Config.activation_function='relu' is not supported"):
        DecoderLMConfig.from_gpt2(_gpt2_config(activation_function="relu"))
    theirs, _ = _models(seed)
    other = DecoderLM(DecoderLMConfig(vocab_size=VOCAB, context_length=CONTEXT, d_model=32, num_layers=3,
                                      num_heads=4))
    with pytest.raises(ValueError, match="copy_from_gpt2: configurations differ"):
        other.copy_from_gpt2(theirs)
