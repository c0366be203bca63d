"""reference/vlm.py against transformers.VisualBertModel and VisualBertForPreTraining (tiny config, weights copied).

gold = our VisualBERT in float64; candidate = transformers' VisualBertModel in the dtype under test (its
attention is written out in the model's own dtype, so float64 is float64 throughout); baseline = ours in
that dtype. Text padding (attention_mask) and region padding (visual_attention_mask) are both exercised,
as are random token types on both sides. The pre-training heads and losses (masked language modelling over the
text with the regions in context, sentence-image prediction) are compared with VisualBertForPreTraining on text
masked by reference.bert.mask_tokens; transformers takes labels over every position, so its regions get -100.
"""

import pytest
import torch
import transformers

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor, randomize_parameters
from reference.bert import IGNORE_INDEX, mask_tokens
from reference.vlm import VisualBertConfig, VisualBertEncoder, VisualBertForPreTraining

VOCAB, HIDDEN, HEADS, FFN, LAYERS, VISUAL_DIM, TYPES = 61, 32, 4, 48, 2, 20, 2


def _their_config():
    return transformers.VisualBertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                           num_attention_heads=HEADS, intermediate_size=FFN,
                                           visual_embedding_dim=VISUAL_DIM, max_position_embeddings=64,
                                           type_vocab_size=TYPES, hidden_dropout_prob=0.0,
                                           attention_probs_dropout_prob=0.0, attn_implementation="eager")


def _our_config():
    return VisualBertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                            intermediate_size=FFN, max_position_embeddings=64, type_vocab_size=TYPES,
                            visual_embedding_dim=VISUAL_DIM)


def _models(seed):
    theirs = randomize_parameters(transformers.VisualBertModel(_their_config()).double().eval(), seed)
    return VisualBertEncoder(_our_config()).double().copy_from_transformers(theirs), theirs


def _pretraining_models(seed):
    theirs = randomize_parameters(transformers.VisualBertForPreTraining(_their_config()).double().eval(), seed)
    return VisualBertForPreTraining(_our_config()).double().copy_from_transformers(theirs), theirs


def _keep(batch: int, length: int, seed: int) -> torch.Tensor:
    """(B, N) int mask, 1 = real: each row keeps a random prefix of at least one token."""
    lengths = torch.randint(1, length + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    lengths[0] = length  # one row without padding
    return (torch.arange(length)[None, :] < lengths[:, None]).long()


def _inputs(seed, batch, nt, nv):
    g = torch.Generator().manual_seed(seed)
    return dict(
        input_ids=torch.randint(0, VOCAB, (batch, nt), generator=g),
        visual_embeds=random_tensor((batch, nv, VISUAL_DIM), seed=seed + 1, dtype=torch.float64),
        attention_mask=_keep(batch, nt, seed + 2),
        visual_attention_mask=_keep(batch, nv, seed + 3),
        token_type_ids=torch.randint(0, TYPES, (batch, nt), generator=g),
        visual_token_type_ids=torch.randint(0, TYPES, (batch, nv), generator=g),
    )


def _cast(inputs, dtype):
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


SIZES = [
    # (B, Nt, Nv)
    (3, 9, 5),  # short text, few regions
    (2, 1, 13),  # a single text token ([CLS] only) and 13 regions
    (2, 17, 36),  # 53 positions: no power of two anywhere
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_visual_bert_matches_transformers(seed, dtype, sizes):
    ours, theirs = _models(seed)
    inputs = _inputs(seed, *sizes)
    gold = ours(**inputs)
    baseline = ours.to(dtype)(**_cast(inputs, dtype))
    with torch.no_grad():
        candidate = theirs.to(dtype)(**_cast(inputs, dtype))
    b, nt, nv = sizes
    assert gold.last_hidden_state.shape == (b, nt + nv, HIDDEN)
    # Padded positions still have outputs in both models (they attend to the real tokens): compare all.
    assert_agrees(candidate.last_hidden_state, gold.last_hidden_state, baseline.last_hidden_state,
                  name="VisualBertModel last_hidden_state")
    assert_agrees(candidate.pooler_output, gold.pooler_output, baseline.pooler_output,
                  name="VisualBertModel pooler_output")


def test_visual_bert_gradients_match_transformers(seed):
    ours, theirs = _models(seed)
    inputs = _inputs(seed, 2, 7, 6)
    weights = random_tensor((2, 13, HIDDEN), seed=seed + 4, dtype=torch.float64)
    grads = []
    for model in (ours, theirs):
        visual = inputs["visual_embeds"].clone().requires_grad_()
        hidden = model(**{**inputs, "visual_embeds": visual})[0]
        grads.append(torch.autograd.grad((hidden * weights).sum(), visual)[0])
    assert_agrees(grads[1], grads[0], gradient=True, name="d visual_embeds")


def _pretraining_labels(seed, inputs):
    """Text masked as BERT does (ids 0-2 play [PAD], [CLS], [SEP]; 3 is [MASK]) and a random sentence-image label."""
    g = torch.Generator().manual_seed(seed + 7)
    masked, labels = mask_tokens(inputs["input_ids"], special_token_ids=(0, 1, 2), mask_token_id=3, vocab_size=VOCAB,
                                 generator=g, attention_mask=inputs["attention_mask"], mlm_probability=0.3)
    sentence_image_labels = torch.randint(0, 2, (masked.shape[0],), generator=g)
    return {**inputs, "input_ids": masked}, labels, sentence_image_labels


def _their_labels(labels, inputs):
    """transformers' labels run over text and regions: the regions are never targets."""
    regions = torch.full(inputs["visual_embeds"].shape[:2], IGNORE_INDEX, dtype=labels.dtype)
    return torch.cat([labels, regions], dim=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sizes", [(3, 9, 5), (2, 17, 36)], ids=lambda s: "x".join(map(str, s)))
def test_visual_bert_pretraining_matches_transformers(seed, dtype, sizes):
    ours, theirs = _pretraining_models(seed)
    inputs, labels, sentence_image_labels = _pretraining_labels(seed, _inputs(seed, *sizes))
    their_labels = _their_labels(labels, inputs)
    gold = ours(**inputs, labels=labels, sentence_image_labels=sentence_image_labels)
    baseline = ours.to(dtype)(**_cast(inputs, dtype), labels=labels, sentence_image_labels=sentence_image_labels)
    with torch.no_grad():
        theirs = theirs.to(dtype)
        candidate = theirs(**_cast(inputs, dtype), labels=their_labels, sentence_image_labels=sentence_image_labels)
        candidate_mlm = theirs(**_cast(inputs, dtype), labels=their_labels).loss  # MLM alone without the second
    b, nt, nv = sizes
    assert gold.prediction_logits.shape == (b, nt + nv, VOCAB)
    for name in ("prediction_logits", "seq_relationship_logits", "loss"):
        assert_agrees(getattr(candidate, name), getattr(gold, name).detach(), getattr(baseline, name).detach(),
                      name=f"VisualBertForPreTraining {name}")
    assert_agrees(candidate_mlm, gold.mlm_loss.detach(), baseline.mlm_loss.detach(), name="masked LM loss")


def test_visual_bert_pretraining_gradients_match_transformers(seed):
    """d loss / d regions and d loss / d the tied word embeddings (reached through the input and the MLM decoder)."""
    ours, theirs = _pretraining_models(seed)
    inputs = _inputs(seed, 3, 8, 6)
    inputs["input_ids"][:, 1] = 1  # the pad token id, whose embedding row gets no gradient from the input side
    inputs, labels, sentence_image_labels = _pretraining_labels(seed, inputs)
    grads = []
    for model, model_labels, encoder in ((ours, labels, ours.visual_bert),
                                         (theirs, _their_labels(labels, inputs), theirs.visual_bert)):
        visual = inputs["visual_embeds"].clone().requires_grad_()
        loss = model(**{**inputs, "visual_embeds": visual}, labels=model_labels,
                     sentence_image_labels=sentence_image_labels).loss
        grads.append(torch.autograd.grad(loss, (visual, encoder.embeddings.word_embeddings.weight)))
    for name, candidate, gold in zip(("visual_embeds", "word embeddings"), grads[1], grads[0], strict=True):
        assert_agrees(candidate, gold, gradient=True, name=f"VisualBertForPreTraining d loss / d {name}")


def test_regions_are_context_not_targets(seed):
    """The MLM loss reads the text positions only, yet the regions change it (they are attended to)."""
    ours, _ = _pretraining_models(seed)
    inputs, labels, _ = _pretraining_labels(seed, _inputs(seed, 2, 7, 5))
    out = ours(**inputs, labels=labels)
    text_only = torch.nn.functional.cross_entropy(out.prediction_logits[:, :7].reshape(-1, VOCAB), labels.reshape(-1))
    assert_agrees(out.mlm_loss.detach(), text_only.detach(), name="MLM loss over the text positions")
    other = ours(**{**inputs, "visual_embeds": random_tensor((2, 5, VISUAL_DIM), seed=seed + 3, dtype=torch.float64)},
                 labels=labels)
    assert abs(float(other.mlm_loss.detach() - out.mlm_loss.detach())) > 1e-6
    with pytest.raises(ValueError, match=r"labels must have shape \(B, N\) = \(2, 7\)"):
        ours(**inputs, labels=_their_labels(labels, inputs))
    with pytest.raises(ValueError, match="sentence_image_labels must lie in"):
        ours(**inputs, labels=labels, sentence_image_labels=torch.tensor([0, 2]))


def test_padding_does_not_reach_real_tokens(seed):
    ours, _ = _models(seed)
    inputs = _inputs(seed, 3, 8, 6)
    inputs["attention_mask"][1, 5:] = 0
    inputs["visual_attention_mask"][2, 3:] = 0
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["input_ids"][1, 5:] = (changed["input_ids"][1, 5:] + 7) % VOCAB
    changed["visual_embeds"][2, 3:] = random_tensor((3, VISUAL_DIM), seed=seed + 9, dtype=torch.float64)
    before, after = ours(**inputs).last_hidden_state, ours(**changed).last_hidden_state
    real = torch.cat([inputs["attention_mask"], inputs["visual_attention_mask"]], dim=1).bool()
    assert_agrees(after[real], before[real], name="real tokens after changing padded ones")
    assert not torch.allclose(after[~real], before[~real])  # the padded positions themselves did change


def test_regions_are_an_unordered_set(seed):
    # Every region gets visual position 0: permuting the regions permutes their outputs, text is unchanged.
    ours, _ = _models(seed)
    inputs = _inputs(seed, 2, 6, 7)
    inputs["visual_attention_mask"] = torch.ones(2, 7, dtype=torch.long)
    permutation = torch.randperm(7, generator=torch.Generator().manual_seed(seed))
    permuted = {**inputs, "visual_embeds": inputs["visual_embeds"][:, permutation],
                "visual_token_type_ids": inputs["visual_token_type_ids"][:, permutation]}
    before, after = ours(**inputs).last_hidden_state, ours(**permuted).last_hidden_state
    assert_agrees(after[:, :6], before[:, :6], name="text outputs under a region permutation")
    assert_agrees(after[:, 6:], before[:, 6:][:, permutation], name="region outputs under a region permutation")


def test_backend_reaches_every_attention_layer():
    model = VisualBertEncoder(VisualBertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=3, num_heads=HEADS,
                                               intermediate_size=FFN, visual_embedding_dim=VISUAL_DIM,
                                               backend="sdpa"))
    assert [m.backend for m in model.modules() if hasattr(m, "backend")] == ["sdpa"] * 3


def test_bad_inputs_are_rejected(seed):
    ours, _ = _models(seed)
    inputs = _inputs(seed, 2, 5, 4)
    bad_cases = [
        ({"input_ids": inputs["input_ids"].double()}, TypeError, "input_ids must be an integer tensor"),
        ({"input_ids": inputs["input_ids"][0]}, ValueError, r"input_ids must have shape \(B, N\)"),
        ({"input_ids": inputs["input_ids"] + VOCAB}, ValueError, "input_ids must lie in"),
        ({"visual_embeds": inputs["visual_embeds"][..., :-1]}, ValueError,
         r"visual_embeds must have shape \(B, Nv, visual_embedding_dim\) = \(2, Nv, 20\)"),
        ({"visual_embeds": inputs["visual_embeds"].long()}, TypeError, "visual_embeds must be a floating-point"),
        ({"attention_mask": inputs["attention_mask"][:, :-1]}, ValueError, r"attention_mask must have shape"),
        ({"visual_attention_mask": inputs["visual_attention_mask"] * 2}, ValueError,
         "visual_attention_mask must hold only 0"),
        ({"token_type_ids": inputs["token_type_ids"] + TYPES}, ValueError, "token_type_ids must lie in"),
        ({"visual_token_type_ids": inputs["visual_token_type_ids"][:, :2]}, ValueError,
         "visual_token_type_ids must have shape"),
        ({"attention_mask": torch.zeros(2, 5), "visual_attention_mask": torch.zeros(2, 4)}, ValueError,
         "leave a sequence with no real token"),
    ]
    for change, error, message in bad_cases:
        with pytest.raises(error, match=message):
            ours(**{**inputs, **change})
    with pytest.raises(ValueError, match="more than max_position_embeddings"):
        ours(**{**inputs, "input_ids": torch.zeros(2, 65, dtype=torch.long), "attention_mask": None,
                "token_type_ids": None})
