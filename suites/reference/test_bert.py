"""reference/bert.py against transformers.BertForPreTraining (tiny config, weights copied), plus the masking
procedure and the shipped WordPiece vocabulary.

Oracle checks: gold = our model in float64; candidate = transformers' model (eager attention, dropout 0, eval
mode) in float64 and float32; baseline = our model in that dtype. Every parameter is redrawn at random before
the copy (transformers initialises LayerNorms to 1/0 and biases to 0, which would hide a swapped or skipped one).
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

import reference.attention as attention
from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.attention import MultiHeadAttention
from reference.bert import (
    IGNORE_INDEX,
    VOCAB_FILE,
    BertConfig,
    BertForPreTraining,
    copy_from_transformers,
    load_tokenizer,
    load_vocab,
    mask_tokens,
)

DTYPES = [torch.float64, torch.float32]
TINY = dict(
    vocab_size=101,  # prime: not a multiple of any block
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=24,
    type_vocab_size=2,
)
PAD, CLS, SEP = 0, 2, 3


def _their_config(**overrides) -> transformers.BertConfig:
    return transformers.BertConfig(**{**TINY, **overrides}, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, attn_implementation="eager")


def _models(seed: int, backend: str = "reference", **overrides):
    """(ours, theirs) in float64 with the same random weights."""
    config = _their_config(**overrides)
    theirs = transformers.BertForPreTraining(config).double().eval()
    with torch.no_grad():
        for i, (name, p) in enumerate(sorted(theirs.named_parameters())):
            # Linear weights scaled by 1/sqrt(fan_in) keep activations O(1); everything else standard normal.
            scale = p.shape[1] ** -0.5 if p.dim() == 2 and "embeddings" not in name else 1.0
            p.copy_(random_tensor(p.shape, seed=seed + 17 * i, dtype=torch.float64, scale=scale))
    ours = BertForPreTraining(BertConfig.from_transformers(config, backend=backend)).double()
    return copy_from_transformers(ours, theirs), theirs


def _batch(seed: int, batch: int, length: int, vocab_size: int = TINY["vocab_size"], *, padded: bool = False):
    """Random ids framed as [CLS] a [SEP] b [SEP] [PAD]..., with the token type ids and mask that go with them.
    Row 0 is never padded; with ``padded`` every other row is (otherwise each may draw the full length)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch, length), generator=g)
    lengths = torch.randint(4, length + (0 if padded else 1), (batch,), generator=g)
    lengths[0] = length  # one row without padding
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, N), 1 = real token
    token_type_ids = torch.zeros_like(ids)
    for row, n in enumerate(lengths.tolist()):
        split = int(torch.randint(1, n - 2, (1,), generator=g))  # first [SEP]: segment A is ids[1:split]
        ids[row, 0], ids[row, split], ids[row, n - 1] = CLS, SEP, SEP
        ids[row, n:] = PAD
        token_type_ids[row, split + 1 : n] = 1
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, IGNORE_INDEX)
    labels[:, 1] = ids[:, 1]  # at least one target per row
    next_sentence_label = torch.randint(0, 2, (batch,), generator=g)
    return dict(input_ids=ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels,
                next_sentence_label=next_sentence_label)


def _their_losses(out, inputs):
    """The two losses written out with torch.nn on transformers' logits (transformers reports only their sum)."""
    cross_entropy = nn.CrossEntropyLoss()  # ignore_index defaults to -100
    mlm = cross_entropy(out.prediction_logits.flatten(0, 1), inputs["labels"].flatten())
    nsp = cross_entropy(out.seq_relationship_logits, inputs["next_sentence_label"])
    return mlm, nsp


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 13), (2, 24)], ids=["3x13", "2x24-max-positions"])
def test_pretraining_matches_transformers(seed, dtype, shape):
    ours, theirs = _models(seed)
    inputs = _batch(seed, *shape)
    gold = ours(**inputs)
    baseline = copy.deepcopy(ours).to(dtype)(**inputs)
    candidate = copy.deepcopy(theirs).to(dtype)(**inputs, output_hidden_states=True)
    their_mlm, their_nsp = _their_losses(candidate, inputs)

    assert_agrees(candidate.hidden_states[-1], gold.hidden_states, baseline.hidden_states, name="hidden states")
    assert_agrees(candidate.prediction_logits, gold.prediction_logits, baseline.prediction_logits, name="MLM logits")
    assert_agrees(candidate.seq_relationship_logits, gold.seq_relationship_logits, baseline.seq_relationship_logits,
                  name="NSP logits")
    assert_agrees(their_mlm, gold.mlm_loss, baseline.mlm_loss, name="MLM loss")
    assert_agrees(their_nsp, gold.nsp_loss, baseline.nsp_loss, name="NSP loss")
    assert_agrees(candidate.loss, gold.loss, baseline.loss, name="pre-training loss")


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_gradients_match_transformers(seed, dtype):
    ours, theirs = _models(seed)
    inputs = _batch(seed, 3, 11)
    ours_in_dtype, theirs_in_dtype = copy.deepcopy(ours).to(dtype), copy.deepcopy(theirs).to(dtype)
    # The word embedding gets gradient twice (input lookup and tied MLM decoder); the position embedding and the
    # first layer's query projection sit at the bottom of the stack, so their gradients cross every layer.
    ours_names = ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                  "bert.encoder.layers.0.self_attn.q_proj.weight"]
    their_names = ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                   "bert.encoder.layer.0.attention.self.query.weight"]

    def grads(model, names):
        parameters = dict(model.named_parameters())
        return torch.autograd.grad(model(**inputs).loss, [parameters[n] for n in names])

    for name, cand, gold, base in zip(ours_names, grads(theirs_in_dtype, their_names), grads(ours, ours_names),
                                      grads(ours_in_dtype, ours_names), strict=True):
        assert_agrees(cand, gold, base, gradient=True, name=f"d loss / d {name}")


def test_text_through_tokenizer_masking_and_both_models(seed):
    tokenizer = load_tokenizer()
    ours, theirs = _models(seed, vocab_size=len(tokenizer), max_position_embeddings=32)
    pairs = [("The cat sat on the mat.", "It was happy."),
             ("Read the first page of the book before school.", "The dog ran home!"),
             ("Music, water and light.", "Playing games is fun?")]
    batch = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    masked, labels = mask_tokens(batch["input_ids"], special_token_ids=tokenizer.all_special_ids,
                                 mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                                 generator=torch.Generator().manual_seed(seed), attention_mask=batch["attention_mask"])
    inputs = dict(input_ids=masked, attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
                  labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))
    gold, candidate = ours(**inputs), theirs(**inputs)
    assert_agrees(candidate.prediction_logits, gold.prediction_logits, name="MLM logits")
    assert_agrees(candidate.loss, gold.loss, name="pre-training loss")


@pytest.mark.parametrize("dtype", DTYPES)
def test_seed_chinese_sentences_through_both_models(seed, dtype):
    """Seed sections 1 and 2: its Chinese example sentences, tokenized over the shipped vocabulary (one token per
    character, see suites/reference/test_tokenization.py) and padded into one batch, through both encoders:
    hidden states, pooled output, and the gradient of an MLM loss on them with respect to the word embeddings."""
    tokenizer = load_tokenizer()
    sentences = ["你好，世界！", "你好，世界！明天下雨了。", "这是一张图片。"]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (3, 14)  # [CLS] + 12 characters + [SEP]; not the seed's claimed 13
    assert not (batch["input_ids"] == tokenizer.unk_token_id).any()
    ours, theirs = _models(seed, vocab_size=len(tokenizer), max_position_embeddings=32)
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    gold = ours.bert(**inputs)
    baseline = copy.deepcopy(ours).to(dtype).bert(**inputs)
    with torch.no_grad():
        candidate = copy.deepcopy(theirs).to(dtype).bert(**inputs)
    assert_agrees(candidate.last_hidden_state, gold[0].detach(), baseline[0].detach(), name="seed sentences hidden")
    assert_agrees(candidate.pooler_output, gold[1].detach(), baseline[1].detach(), name="seed sentences pooled")

    labels = torch.where(batch["attention_mask"].bool(), batch["input_ids"], IGNORE_INDEX)  # predict every token
    grads = []
    for model in (ours, theirs):
        logits = model(**inputs).prediction_logits  # (B, N, V)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        grads.append(torch.autograd.grad(loss, model.bert.embeddings.word_embeddings.weight)[0])
    assert_agrees(grads[1], grads[0], gradient=True, name="seed sentences d MLM loss / d word embeddings")


def test_padded_positions_do_not_change_real_tokens(seed):
    ours, _ = _models(seed)
    inputs = _batch(seed, 3, 13, padded=True)  # a batch without padding (1 draw in 100) would test nothing
    del inputs["labels"], inputs["next_sentence_label"]
    changed = {**inputs, "input_ids": inputs["input_ids"].clone()}
    padding = inputs["attention_mask"] == 0
    assert padding[1:].any(dim=1).all()
    changed["input_ids"][padding] = torch.randint(5, TINY["vocab_size"], (int(padding.sum()),))
    real = ~padding[..., None]
    before, after = ours(**inputs), ours(**changed)
    assert torch.equal(before.prediction_logits * real, after.prediction_logits * real)
    assert torch.equal(before.seq_relationship_logits, after.seq_relationship_logits)


def test_tied_decoder_shares_the_word_embedding_matrix():
    model = BertForPreTraining(BertConfig(**TINY))
    assert model.mlm.decoder.weight is model.bert.embeddings.word_embeddings.weight


# ---- the backend seam ------------------------------------------------------------------------------


def test_backend_reaches_every_attention_layer_and_is_used(seed, monkeypatch):
    calls = []

    def recording(q, k, v, **kwargs):
        calls.append(q.shape)
        return attention.ATTENTION_BACKENDS.registered["reference"](q, k, v, **kwargs)

    monkeypatch.setitem(attention.ATTENTION_BACKENDS.registered, "recording", recording)  # removed again after the test
    reference_model, _ = _models(seed)
    recording_model, _ = _models(seed, backend="recording")
    layers = [m for m in recording_model.modules() if isinstance(m, MultiHeadAttention)]
    assert len(layers) == TINY["num_hidden_layers"]
    assert all(layer.backend == "recording" for layer in layers)
    inputs = _batch(seed, 2, 9)
    out = recording_model(**inputs)
    assert len(calls) == TINY["num_hidden_layers"]
    assert torch.equal(out.prediction_logits, reference_model(**inputs).prediction_logits)


def test_sdpa_backend_agrees_with_the_reference(seed):
    reference_model, _ = _models(seed)
    sdpa_model, _ = _models(seed, backend="sdpa")
    inputs = _batch(seed, 3, 13)
    assert_agrees(sdpa_model(**inputs).prediction_logits, reference_model(**inputs).prediction_logits,
                  name="backend sdpa")


# ---- the 80/10/10 masking procedure --------------------------------------------------------------------


def _masking_sample(seed: int, batch: int = 1024, length: int = 96):
    """A large batch with special tokens inside the text and ragged padding; vocabulary of the shipped file."""
    vocab_size = len(load_vocab())
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, length), generator=g)  # specials (ids 0-4) land anywhere
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    # Padding keeps ordinary ids in odd rows: the attention mask alone must keep it from being chosen.
    ids = ids.masked_fill((attention_mask == 0) & (torch.arange(batch)[:, None] % 2 == 0), PAD)
    return ids, attention_mask, vocab_size


SPECIALS = [0, 1, 2, 3]  # [PAD] [UNK] [CLS] [SEP]; [MASK] (4) counts as special by definition
MASK = 4


def _mask(ids, attention_mask, vocab_size, seed, **kwargs):
    return mask_tokens(ids, special_token_ids=SPECIALS, mask_token_id=MASK, vocab_size=vocab_size,
                       generator=torch.Generator().manual_seed(seed), attention_mask=attention_mask, **kwargs)


def test_masking_chooses_15_percent_of_real_tokens_and_never_special_or_padding(seed):
    ids, attention_mask, vocab_size = _masking_sample(seed)
    original = ids.clone()
    masked, labels = _mask(ids, attention_mask, vocab_size, seed)
    assert torch.equal(ids, original), "mask_tokens must not modify its input"

    eligible = (ids > MASK) & (attention_mask == 1)
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~eligible).any(), "a special or padding token was chosen"
    assert torch.equal(labels[chosen], ids[chosen]), "labels must hold the original token at chosen positions"
    assert torch.equal(masked[~chosen], ids[~chosen]), "a token that is not a target was changed"
    for n, k in zip(eligible.sum(1).tolist(), chosen.sum(1).tolist(), strict=True):
        assert k == (max(1, math.floor(0.15 * n + 0.5)) if n else 0), f"{k} targets among {n} eligible tokens"

    # Position bias: targets must be spread over the row. Within a row they are drawn without replacement
    # (hypergeometric), whose variance is below the binomial's, so a 5-sigma binomial bound is conservative.
    first_half = torch.zeros_like(eligible)
    first_half[:, : ids.shape[1] // 2] = True
    rate = chosen.sum().item() / eligible.sum().item()
    for half in (first_half, ~first_half):
        n = (eligible & half).sum().item()
        assert abs((chosen & half).sum().item() - rate * n) <= 5 * math.sqrt(n * rate * (1 - rate))


def test_masking_splits_targets_80_10_10(seed):
    ids, attention_mask, vocab_size = _masking_sample(seed)
    masked, labels = _mask(ids, attention_mask, vocab_size, seed)
    chosen = labels != IGNORE_INDEX
    n = int(chosen.sum())  # about 0.15 * 1024 * 48 * (1 - 5/588) = 7300 targets
    to_mask = int((masked[chosen] == MASK).sum())
    unchanged = int((masked[chosen] == ids[chosen]).sum())
    replaced = masked[chosen & (masked != MASK) & (masked != ids)]
    # The random branch draws uniformly from the V - 5 non-special ids, and hits the original token with
    # probability 1/(V - 5); it never yields [MASK]. So each target independently lands in
    #   [MASK] w.p. 0.8,  unchanged w.p. 0.1 + 0.1/(V-5),  another token w.p. 0.1 * (1 - 1/(V-5)),
    # and each count is Binomial(n, p). A correct implementation falls outside 5 standard deviations with
    # probability below 6e-7 per count (n p >= 700, where the normal approximation holds), while a wrong split
    # (say 85/5/10 or 80/20/0) sits 20 or more standard deviations away.
    p_random = 1 / (vocab_size - 5)
    for count, p, what in ((to_mask, 0.8, "[MASK]"), (unchanged, 0.1 + 0.1 * p_random, "unchanged"),
                           (replaced.numel(), 0.1 * (1 - p_random), "random token")):
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(count - n * p) <= 5 * sigma, f"{what}: {count} of {n}, expected {n * p:.0f} +- {5 * sigma:.0f}"
    assert to_mask + unchanged + replaced.numel() == n
    assert (replaced > MASK).all(), "a random replacement was a special token"
    # r uniform draws from m ids cover m (1 - (1 - 1/m)^r) distinct ids on average (about 517 of 998 here, with a
    # standard deviation near 10); a replacement drawn from a small subset of the vocabulary covers far fewer.
    m, r = vocab_size - 5, replaced.numel()
    expected = m * (1 - (1 - 1 / m) ** r)
    assert replaced.unique().numel() > 0.9 * expected, "random replacements cover too few ids"


def test_masking_is_reproducible_from_the_generator(seed):
    ids, attention_mask, vocab_size = _masking_sample(seed, batch=16, length=64)
    first = _mask(ids, attention_mask, vocab_size, seed)
    again = _mask(ids, attention_mask, vocab_size, seed)
    other = _mask(ids, attention_mask, vocab_size, seed + 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])


def test_masking_leaves_rows_without_eligible_tokens_alone(seed):
    ids = torch.tensor([[CLS, SEP, PAD, PAD], [CLS, 50, 60, SEP]])
    masked, labels = _mask(ids, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]), 101, seed)
    assert torch.equal(masked[0], ids[0]) and (labels[0] == IGNORE_INDEX).all()
    assert int((labels[1] != IGNORE_INDEX).sum()) == 1  # max(1, round(0.15 * 2)): at least one target


# ---- tokenization over the shipped vocabulary -----------------------------------------------------------


def test_tokenizer_loads_the_shipped_vocabulary():
    tokenizer = load_tokenizer()
    lines = VOCAB_FILE.read_text(encoding="utf-8").splitlines()
    assert len(tokenizer) == len(lines) == len(load_vocab())
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id] == [lines.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    assert tokenizer.pad_token_id == BertConfig().pad_token_id


def test_tokenizer_encodes_a_sentence_pair():
    tokenizer = load_tokenizer()
    first, second = "The cat sat on the mat.", "It was a very good day!"
    tokens_a, tokens_b = tokenizer.tokenize(first), tokenizer.tokenize(second)
    assert tokens_a == ["the", "cat", "sat", "on", "the", "mat", "."]
    assert "[UNK]" not in tokens_b
    encoded = tokenizer(first, second)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
    assert encoded["token_type_ids"] == [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    assert encoded["attention_mask"] == [1] * len(encoded["input_ids"])


def test_tokenizer_round_trips_decode():
    tokenizer = load_tokenizer()
    text = "the children read a story about the old king and his horse"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    with_punctuation = "Before school, the boy played music."
    decoded = tokenizer.decode(tokenizer(with_punctuation)["input_ids"], skip_special_tokens=True)
    assert tokenizer.tokenize(decoded) == tokenizer.tokenize(with_punctuation)


def test_tokenizer_splits_unknown_words_into_subwords_or_unk():
    tokenizer = load_tokenizer()
    assert tokenizer.tokenize("playing") == ["play", "##ing"]
    assert tokenizer.tokenize("Colorful") == ["color", "##ful"]
    assert tokenizer.tokenize("qzx") == ["[UNK]"]  # no ##z piece: the whole word is unknown
    assert tokenizer.tokenize("λ cat") == ["[UNK]", "cat"]


# ---- bad input ----------------------------------------------------------------------------------------


def test_bad_input_is_rejected_naming_the_argument(seed):
    model = BertForPreTraining(BertConfig(**TINY))
    inputs = _batch(seed, 2, 7)
    ids = inputs["input_ids"]
    cases = [
        (dict(input_ids=ids.float()), TypeError, "input_ids must be an integer tensor"),
        (dict(input_ids=ids.bool()), TypeError, "input_ids must be an integer tensor"),
        (dict(input_ids=ids[0]), ValueError, r"input_ids must have shape \(B, N\)"),
        (dict(input_ids=ids[None]), ValueError, r"input_ids must have shape \(B, N\)"),
        (dict(input_ids=ids.tolist()), TypeError, "input_ids must be a torch.Tensor"),
        (dict(input_ids=torch.cat([ids] * 4, dim=1)), ValueError, r"more than max_position_embeddings \(24\)"),
        (dict(input_ids=ids.masked_fill(ids == SEP, 101)), ValueError, r"input_ids must lie in \[0, 101\)"),
        (dict(input_ids=ids.masked_fill(ids == SEP, -1)), ValueError, r"input_ids must lie in \[0, 101\)"),
        (dict(input_ids=ids, attention_mask=inputs["attention_mask"][:, :-1]), ValueError,
         "attention_mask must have the shape of input_ids"),
        (dict(input_ids=ids, attention_mask=inputs["attention_mask"] * 2), ValueError,
         r"attention_mask must hold only 1 \(real token\) and 0"),
        (dict(input_ids=ids, attention_mask=inputs["attention_mask"] * torch.tensor([[1], [0]])), ValueError,
         "attention_mask must mark at least one real token"),
        (dict(input_ids=ids, token_type_ids=inputs["token_type_ids"] + 1), ValueError,
         r"token_type_ids must lie in \[0, 2\)"),
        (dict(input_ids=ids, token_type_ids=inputs["token_type_ids"][:1]), ValueError,
         r"token_type_ids must have shape \(B, N\)"),
        (dict(input_ids=ids, labels=ids.masked_fill(ids == CLS, -5)), ValueError, "labels must lie in"),
        (dict(input_ids=ids, next_sentence_label=torch.tensor([0, 1, 1])), ValueError,
         r"next_sentence_label must have shape \(B,\)"),
        (dict(input_ids=ids, next_sentence_label=torch.tensor([0, 2])), ValueError,
         r"next_sentence_label must lie in \[0, 2\)"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            model(**kwargs)


def test_bad_config_and_bad_masking_arguments_are_rejected(seed):
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        BertConfig(**{**TINY, "hidden_size": 30})
    with pytest.raises(ValueError, match="hidden_act must be one of"):
        BertConfig(**TINY, hidden_act="swish")
    with pytest.raises(ValueError, match="backend must be one of"):
        BertForPreTraining(BertConfig(**TINY, backend="no-such-backend"))(torch.tensor([[CLS, 7, SEP]]))
    with pytest.raises(ValueError, match="config.intermediate_size differs"):
        copy_from_transformers(BertForPreTraining(BertConfig(**TINY)),
                               transformers.BertForPreTraining(_their_config(intermediate_size=64)))

    ids = torch.tensor([[CLS, 50, 60, SEP]])
    generator = torch.Generator().manual_seed(seed)
    arguments = dict(special_token_ids=SPECIALS, mask_token_id=MASK, vocab_size=101)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        mask_tokens(ids, **arguments, generator=seed)
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        mask_tokens(ids.float(), **arguments, generator=generator)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, N\)"):
        mask_tokens(ids[0], **arguments, generator=generator)
    with pytest.raises(ValueError, match=r"mlm_probability must lie in \(0, 1\]"):
        mask_tokens(ids, **arguments, generator=generator, mlm_probability=0.0)
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        mask_tokens(ids, **arguments, generator=generator, attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 40\)"):
        mask_tokens(ids, **{**arguments, "vocab_size": 40}, generator=generator)
