"""A reference module and its library oracle with the same parameters, for the suites that compare them.

The reference suites check each reference against its oracle; the correctness suites run the same reference with
a kernel backend. Both build the pair here, so "the same weights" means one thing.
"""

from __future__ import annotations

import copy

import torch

from fusebench.inputs import random_tensor


def gcn_pair(seed: int, in_channels: int, out_channels: int, **options):
    """``(ours, theirs)``: reference.gnn.GCNConv and torch_geometric's GCNConv, float64, same parameters."""
    import torch_geometric.nn as pyg_nn

    from reference.gnn import GCNConv

    torch.manual_seed(seed % 2**32)
    theirs = pyg_nn.GCNConv(in_channels, out_channels, **options).double()
    ours = GCNConv(in_channels, out_channels, **options).double()
    with torch.no_grad():
        theirs.bias.copy_(random_tensor((out_channels,), seed=seed + 3, dtype=torch.float64))  # PyG starts at 0
        ours.lin.weight.copy_(theirs.lin.weight)
        ours.bias.copy_(theirs.bias)
    return ours, theirs


def gat_pair(seed: int, in_channels: int, out_channels: int, heads: int, **options):
    """``(ours, theirs)``: reference.gnn.GATConv and torch_geometric's GATConv (dropout 0), float64."""
    import torch_geometric.nn as pyg_nn

    from reference.gnn import GATConv

    torch.manual_seed(seed % 2**32)
    theirs = pyg_nn.GATConv(in_channels, out_channels, heads, dropout=0.0, **options).double()
    ours = GATConv(in_channels, out_channels, heads, **options).double()
    with torch.no_grad():
        theirs.bias.copy_(random_tensor(theirs.bias.shape, seed=seed + 3, dtype=torch.float64))  # PyG starts at 0
        ours.lin.weight.copy_(theirs.lin.weight)
        ours.att_src.copy_(theirs.att_src[0])  # (1, H, C) -> (H, C)
        ours.att_dst.copy_(theirs.att_dst[0])
        ours.bias.copy_(theirs.bias)
    return ours, theirs


def gpt2_config(vocab_size: int, context: int, width: int, **overrides):
    """A two-layer, four-head transformers GPT-2 config without dropout and without an eos token (generation runs
    its full length, as ours does)."""
    import transformers

    options = dict(vocab_size=vocab_size, n_positions=context, n_embd=width, n_layer=2, n_head=4, resid_pdrop=0.0,
                   embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager", bos_token_id=0, eos_token_id=None,
                   pad_token_id=0)
    return transformers.GPT2Config(**(options | overrides))


def gpt2_pair(seed: int, *, vocab_size: int, context: int, width: int, weight_scale: float,
              backend: str = "reference"):
    """``(theirs, ours)``: transformers' GPT-2 (:func:`gpt2_config`) in float64 with N(0, weight_scale) weights,
    LayerNorms included, and reference.generation.DecoderLM with them copied."""
    import transformers

    from reference.generation import DecoderLM, DecoderLMConfig

    config = gpt2_config(vocab_size, context, width)
    theirs = transformers.GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():
        for i, param in enumerate(theirs.parameters()):
            param.copy_(random_tensor(param.shape, seed=seed + i, dtype=torch.float64, scale=weight_scale))
    ours = DecoderLM(DecoderLMConfig.from_gpt2(config, backend=backend)).double().copy_from_gpt2(theirs)
    return theirs, ours


def gat_scores_keep_their_side(layer, edge_index: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether every score of a GAT layer (ours or PyG's, float64, self-loops included) keeps, computed in ``dtype``,
    the side of LeakyReLU's kink it has in float64.

    LeakyReLU's derivative jumps from 1 to the slope at 0. A score that rounding carries across 0 takes the other
    slope in low precision, and every gradient through it moves by (1 - slope) times that edge's term: an error no
    kernel can avoid and that the eager baseline, rounding differently, may escape. The error-ratio rule assumes a
    smooth function, so the tests draw again (see :func:`draw_gat_input`) rather than judge such an input. Both
    roundings a backend may take are checked: the two per-node terms added in float32 (the Triton kernel) and in
    ``dtype`` itself (eager PyTorch).
    """
    low = copy.deepcopy(layer).to(dtype)
    heads, channels = layer.heads, layer.out_channels
    loops = torch.arange(x.shape[0], device=edge_index.device)
    src = torch.cat([edge_index[0], loops])
    dst = torch.cat([edge_index[1], loops])

    def terms(module, features):
        z = module.lin(features).view(features.shape[0], heads, channels)
        return ((z * module.att_src.view(heads, channels)).sum(-1), (z * module.att_dst.view(heads, channels)).sum(-1))

    with torch.no_grad():
        gold_src, gold_dst = terms(layer, x.double())
        low_src, low_dst = terms(low, x.to(dtype))
    positive = gold_src[src] + gold_dst[dst] > 0
    return all(bool(((s[src] + d[dst] > 0) == positive).all())
               for s, d in ((low_src.float(), low_dst.float()), (low_src, low_dst)))


def draw_gat_input(layer, edge_index: torch.Tensor, shape, *, seed: int, dtype: torch.dtype, attempts: int = 64):
    """A fresh random input ``x`` (float64, rounded to ``dtype``) whose scores keep their LeakyReLU side in ``dtype``
    (:func:`gat_scores_keep_their_side`): the draw for ``seed``, or the first of ``seed + 1, seed + 2, ...`` that
    does. With tens of edges a bfloat16 draw often crosses, a float16 draw rarely."""
    for attempt in range(attempts):
        x = random_tensor(shape, seed=seed + attempt, dtype=torch.float64).to(dtype).double()
        if gat_scores_keep_their_side(layer, edge_index, x, dtype):
            return x
    raise AssertionError(f"no input of {attempts} draws from seed {seed} keeps every GAT score's LeakyReLU side in "
                         f"{dtype}: the layer's scores sit at the kink (check its parameters)")
