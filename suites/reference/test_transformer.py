"""reference/transformer.py against torch.nn.TransformerEncoderLayer / TransformerDecoderLayer (weights copied).

Both norm placements, both of torch's activations, padding masks, causal decoding, and stacks. gold = our
layer in float64; candidate = torch's layer in the dtype under test; baseline = our layer in that dtype.
"""

import pytest
import torch
from torch import nn

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.attention import causal_mask
from reference.transformer import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

D_MODEL, HEADS, FFN = 32, 4, 48


def _padding(batch: int, length: int, seed: int) -> torch.Tensor:
    lengths = torch.randint(1, length + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    return torch.arange(length)[None, :] >= lengths[:, None]  # True = padding


def _randomize_norms(module: nn.Module, seed: int) -> None:
    # LayerNorm starts at weight 1, bias 0: random values make a swapped or skipped norm visible.
    with torch.no_grad():
        for i, norm in enumerate(m for m in module.modules() if isinstance(m, nn.LayerNorm)):
            norm.weight.copy_(random_tensor(norm.weight.shape, seed=seed + 2 * i, dtype=torch.float64))
            norm.bias.copy_(random_tensor(norm.bias.shape, seed=seed + 2 * i + 1, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(seed, dtype, norm_first, activation):
    torch.manual_seed(seed)
    theirs = nn.TransformerEncoderLayer(D_MODEL, HEADS, FFN, dropout=0.0, activation=activation,
                                        norm_first=norm_first, batch_first=True).double().eval()
    _randomize_norms(theirs, seed)
    ours = TransformerEncoderLayer(D_MODEL, HEADS, FFN, activation=activation, norm_first=norm_first).double()
    ours.copy_from_torch(theirs)
    x = random_tensor((3, 11, D_MODEL), seed=seed, dtype=torch.float64)
    padding = _padding(3, 11, seed)
    gold = ours(x, key_padding_mask=padding)
    baseline = ours.to(dtype)(x.to(dtype), key_padding_mask=padding)
    with torch.inference_mode(False):
        candidate = theirs.to(dtype)(x.to(dtype), src_key_padding_mask=padding)
    keep = ~padding[..., None]  # torch's fast path may leave padded positions unspecified: compare real tokens
    assert_agrees(candidate * keep, gold * keep, baseline * keep, name="nn.TransformerEncoderLayer")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_decoder_layer_matches_torch_with_causal_self_attention_and_cross_attention(seed, dtype, norm_first):
    torch.manual_seed(seed)
    theirs = nn.TransformerDecoderLayer(D_MODEL, HEADS, FFN, dropout=0.0, norm_first=norm_first,
                                        batch_first=True).double().eval()
    _randomize_norms(theirs, seed)
    ours = TransformerDecoderLayer(D_MODEL, HEADS, FFN, norm_first=norm_first).double().copy_from_torch(theirs)
    target = random_tensor((2, 9, D_MODEL), seed=seed, dtype=torch.float64)
    memory = random_tensor((2, 13, D_MODEL), seed=seed + 1, dtype=torch.float64)
    memory_padding = _padding(2, 13, seed)
    gold = ours(target, memory, memory_key_padding_mask=memory_padding)
    baseline = ours.to(dtype)(target.to(dtype), memory.to(dtype), memory_key_padding_mask=memory_padding)
    candidate = theirs.to(dtype)(target.to(dtype), memory.to(dtype), tgt_mask=~causal_mask(9, 9),
                                 memory_key_padding_mask=memory_padding)
    assert_agrees(candidate, gold, baseline, name="nn.TransformerDecoderLayer")


def test_stacks_match_torch_stacks_with_gradients(seed):
    torch.manual_seed(seed)
    encoder_layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FFN, dropout=0.0, norm_first=True, batch_first=True)
    decoder_layer = nn.TransformerDecoderLayer(D_MODEL, HEADS, FFN, dropout=0.0, norm_first=True, batch_first=True)
    their_encoder = nn.TransformerEncoder(encoder_layer, 2, norm=nn.LayerNorm(D_MODEL), enable_nested_tensor=False)
    their_decoder = nn.TransformerDecoder(decoder_layer, 2, norm=nn.LayerNorm(D_MODEL))
    their_encoder, their_decoder = their_encoder.double(), their_decoder.double()
    _randomize_norms(their_encoder, seed)
    _randomize_norms(their_decoder, seed + 100)

    our_encoder = TransformerEncoder(lambda: TransformerEncoderLayer(D_MODEL, HEADS, FFN, norm_first=True), 2,
                                     final_norm=nn.LayerNorm(D_MODEL)).double()
    our_decoder = TransformerDecoder(lambda: TransformerDecoderLayer(D_MODEL, HEADS, FFN, norm_first=True), 2,
                                     final_norm=nn.LayerNorm(D_MODEL)).double()
    for ours, theirs in ((our_encoder, their_encoder), (our_decoder, their_decoder)):
        for our_layer, their_layer in zip(ours.layers, theirs.layers, strict=True):
            our_layer.copy_from_torch(their_layer)
        ours.norm.load_state_dict(theirs.norm.state_dict())

    source = random_tensor((2, 10, D_MODEL), seed=seed, dtype=torch.float64).requires_grad_()
    target = random_tensor((2, 7, D_MODEL), seed=seed + 1, dtype=torch.float64)
    gold = our_decoder(target, our_encoder(source))
    candidate = their_decoder(target, their_encoder(source), tgt_mask=~causal_mask(7, 7))
    assert_agrees(candidate, gold, name="encoder-decoder stack")
    weights = random_tensor(gold.shape, seed=seed + 2, dtype=torch.float64)
    grad_gold, = torch.autograd.grad((gold * weights).sum(), source)
    grad_candidate, = torch.autograd.grad((candidate * weights).sum(), source)
    assert_agrees(grad_candidate, grad_gold, gradient=True, name="d source")


def test_decoder_output_at_a_position_ignores_later_targets(seed):
    torch.manual_seed(seed)
    layer = TransformerDecoderLayer(D_MODEL, HEADS, FFN).double()
    target = random_tensor((1, 6, D_MODEL), seed=seed, dtype=torch.float64)
    memory = random_tensor((1, 5, D_MODEL), seed=seed + 1, dtype=torch.float64)
    changed = target.clone()
    changed[:, 4:] = random_tensor((1, 2, D_MODEL), seed=seed + 2, dtype=torch.float64)
    assert torch.equal(layer(target, memory)[:, :4], layer(changed, memory)[:, :4])
    assert not torch.equal(layer(target, memory)[:, 4:], layer(changed, memory)[:, 4:])


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation must be one of"):
        TransformerEncoderLayer(D_MODEL, HEADS, FFN, activation="swish")
