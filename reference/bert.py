"""BERT: the encoder, its two pre-training heads and losses, and the masking procedure (seed sections 1 and 2).

Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding":

    embeddings   x = LayerNorm(word[input_ids] + position[0 .. N-1] + token_type[token_type_ids])
    encoder      h = L post-norm Transformer encoder layers (bidirectional self-attention, GELU feed-forward)
    pooler       p = tanh(W_p h[CLS] + b_p)
    MLM head     logits = LayerNorm(gelu(W_t h + b_t)) W_e^T + b     (W_e: the word embeddings, tied)
    NSP head     logits = W_s p + b_s                                (class 0: B follows A; 1: B is random)
    loss         CE(MLM logits, labels; label -100 = not a target) + CE(NSP logits, next_sentence_label)

Masked language modelling (section 3.1, "Task #1"): 15% of the real, non-special tokens of a sequence are
chosen as prediction targets; a chosen token is replaced by ``[MASK]`` 80% of the time, by a random token 10%
of the time and left unchanged 10% of the time (:func:`mask_tokens`).

Conventions follow ``transformers.BertForPreTraining`` so that weights copy one to one
(:func:`copy_from_transformers` holds the name mapping): ``attention_mask`` is ``(B, N)`` with 1 = real token
and 0 = padding, converted here to the attention seam's ``key_padding_mask`` (True = padding). Dropout is left
out: the reference is the deterministic function. Attention runs through
:class:`reference.transformer.TransformerEncoderLayer` -> :class:`reference.attention.MultiHeadAttention` ->
the ``backend=`` seam, with the backend taken from :attr:`BertConfig.backend`.

Tokenization is WordPiece over the small vocabulary this package ships in ``reference/data/vocab.txt``: English
WordPieces, then the seed document's Chinese characters and full-width punctuation (one token per character, as
``bert-base-chinese``; built by ``reference/data/add_seed_characters.py``). :mod:`reference.tokenization` writes
the algorithm out; :func:`load_tokenizer` gives transformers' ``BertTokenizer`` over the same file. Nothing is
downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reference._validation import check_choice, check_divisible, check_token_id, check_token_ids
from reference.transformer import ACTIVATIONS, TransformerEncoder, TransformerEncoderLayer

__all__ = ["BertConfig", "BertEmbeddings", "BertPooler", "BertModel", "MaskedLMHead", "BertPreTrainingOutput",
           "BertForPreTraining", "masked_lm_loss", "next_sentence_loss", "transformers_parameter_names",
           "copy_from_transformers", "mask_tokens", "VOCAB_FILE", "load_vocab", "load_tokenizer", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # the label of a position that is not a prediction target (torch's cross_entropy default)
VOCAB_FILE = Path(__file__).resolve().parent / "data" / "vocab.txt"


@dataclass
class BertConfig:
    """The knobs of the model; names and defaults (BERT-base) follow ``transformers.BertConfig``."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # exact, erf-based GELU, as in the paper and transformers' "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    backend: str = "reference"  # the attention seam's backend, passed down to every attention layer

    def __post_init__(self):
        check_divisible("hidden_size", self.hidden_size, "num_attention_heads", self.num_attention_heads)
        check_choice("hidden_act", self.hidden_act, ACTIVATIONS)
        check_token_id("pad_token_id", self.pad_token_id, self.vocab_size)

    @classmethod
    def from_transformers(cls, config, backend: str = "reference") -> BertConfig:
        """The same model as a ``transformers.BertConfig`` describes (its dropout settings are ignored)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if f.name != "backend"}, backend=backend)


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------


def _check_input_ids(config: BertConfig, input_ids: torch.Tensor) -> None:
    check_token_ids("input_ids", input_ids, config.vocab_size, max_length=config.max_position_embeddings,
                    length_limit="max_position_embeddings")


def _key_padding_mask(attention_mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """transformers' ``attention_mask`` (1 = real token, 0 = padding) -> the seam's mask (True = padding)."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(f"attention_mask must have the shape of input_ids (B, N) = {tuple(shape)}, "
                         f"got {tuple(attention_mask.shape)}")
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must hold only 1 (real token) and 0 (padding)")
    return attention_mask == 0  # (B, N)


# --------------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """Word + learned absolute position + token type (segment A/B) embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (N,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, N, E)
        return self.norm(x + self.token_type_embeddings(token_type_ids))


class BertPooler(nn.Module):
    """The sequence summary the NSP head reads: ``tanh(W h[CLS] + b)``, ``(B, N, E) -> (B, E)``."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, E): the [CLS] position


class BertModel(nn.Module):
    """Embeddings, a stack of post-norm encoder layers, and the pooler.

    Shapes:
        input_ids, attention_mask, token_type_ids ``(B, N)`` -> hidden states ``(B, N, E)``, pooled ``(B, E)``.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = TransformerEncoder(
            lambda: TransformerEncoderLayer(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                                            activation=config.hidden_act, norm_first=False,
                                            layer_norm_eps=config.layer_norm_eps, backend=config.backend),
            config.num_hidden_layers,
        )
        self.pooler = BertPooler(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_input_ids(self.config, input_ids)
        key_padding_mask = _key_padding_mask(attention_mask, input_ids.shape)  # (B, N), True = padding
        if key_padding_mask is not None and bool(key_padding_mask.all(dim=1).any()):
            # Such a row has nothing to attend to: the seam returns zeros, transformers a uniform average of
            # padding. Neither is meaningful, so refuse rather than silently differ from the oracle.
            raise ValueError("attention_mask must mark at least one real token (a 1) in every row")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # every token in segment A
        check_token_ids("token_type_ids", token_type_ids, self.config.type_vocab_size, shape=tuple(input_ids.shape))
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids), key_padding_mask=key_padding_mask)
        return hidden, self.pooler(hidden)  # (B, N, E), (B, E)


# --------------------------------------------------------------------------------------------------
# The pre-training heads and losses
# --------------------------------------------------------------------------------------------------


class MaskedLMHead(nn.Module):
    """``logits = LayerNorm(act(dense(h))) W_e^T + bias``: the decoder shares the word embedding matrix.

    ``config``: any config with ``hidden_size``, ``vocab_size``, ``hidden_act`` and ``layer_norm_eps`` (BERT's, or
    VisualBERT's in :mod:`reference.vlm`).
    """

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: one (V, E) matrix embeds and decodes
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.activation(self.dense(hidden)))  # (B, N, E)
        return self.decoder(h) + self.bias  # (B, N, V)


def masked_lm_loss(prediction_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not ``IGNORE_INDEX`` (-100)."""
    vocab_size = prediction_logits.shape[-1]
    return F.cross_entropy(prediction_logits.reshape(-1, vocab_size), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def next_sentence_loss(seq_relationship_logits: torch.Tensor, next_sentence_label: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the two-way "is B the next sentence?" classifier."""
    return F.cross_entropy(seq_relationship_logits, next_sentence_label)


@dataclass
class BertPreTrainingOutput:
    """What :class:`BertForPreTraining` returns; the losses are None unless their labels were given."""

    prediction_logits: torch.Tensor  # (B, N, V)
    seq_relationship_logits: torch.Tensor  # (B, 2)
    hidden_states: torch.Tensor  # (B, N, E), the encoder's last layer
    pooled: torch.Tensor  # (B, E)
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    loss: torch.Tensor | None = None  # mlm_loss + nsp_loss, when both labels are given


class BertForPreTraining(nn.Module):
    """The encoder with both pre-training heads; given labels, also the pre-training loss.

    Args of ``forward``:
        input_ids: int ``(B, N)``, values in ``[0, vocab_size)``.
        attention_mask: ``(B, N)``, 1 = real token, 0 = padding (default: no padding).
        token_type_ids: int ``(B, N)``, 0 = segment A, 1 = segment B (default: all 0).
        labels: int ``(B, N)``, the original token at each MLM target, ``-100`` elsewhere.
        next_sentence_label: int ``(B,)``, 0 = B follows A, 1 = B is a random sentence.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word_embeddings)
        self.nsp = nn.Linear(config.hidden_size, 2)

    def copy_from_transformers(self, theirs) -> BertForPreTraining:
        """Load the weights of a ``transformers.BertForPreTraining`` (see :func:`copy_from_transformers`)."""
        return copy_from_transformers(self, theirs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None) -> BertPreTrainingOutput:
        hidden, pooled = self.bert(input_ids, attention_mask, token_type_ids)  # (B, N, E), (B, E)
        if labels is not None:
            check_token_ids("labels", labels, self.config.vocab_size, shape=tuple(input_ids.shape), ignore=IGNORE_INDEX)
        if next_sentence_label is not None:
            check_token_ids("next_sentence_label", next_sentence_label, 2, shape=(input_ids.shape[0],))
        out = BertPreTrainingOutput(self.mlm(hidden), self.nsp(pooled), hidden, pooled)
        if labels is not None:
            out.mlm_loss = masked_lm_loss(out.prediction_logits, labels)
        if next_sentence_label is not None:
            out.nsp_loss = next_sentence_loss(out.seq_relationship_logits, next_sentence_label)
        if out.mlm_loss is not None and out.nsp_loss is not None:
            out.loss = out.mlm_loss + out.nsp_loss
        return out


# --------------------------------------------------------------------------------------------------
# Weights from transformers
# --------------------------------------------------------------------------------------------------


def transformers_parameter_names(num_layers: int) -> dict[str, str]:
    """Our parameter name -> the same parameter's name in ``transformers.BertForPreTraining``.

    The one place where the two layouts meet. The tied decoder weight is the word embedding in both.
    """
    embeddings = ("word_embeddings", "position_embeddings", "token_type_embeddings")
    names = {f"bert.embeddings.{e}.weight": f"bert.embeddings.{e}.weight" for e in embeddings}
    names["mlm.bias"] = "cls.predictions.bias"
    modules = {  # modules with a weight and a bias
        "bert.embeddings.norm": "bert.embeddings.LayerNorm",
        "bert.pooler.dense": "bert.pooler.dense",
        "mlm.dense": "cls.predictions.transform.dense",
        "mlm.norm": "cls.predictions.transform.LayerNorm",
        "nsp": "cls.seq_relationship",
    }
    per_layer = {
        "self_attn.q_proj": "attention.self.query",
        "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value",
        "self_attn.out_proj": "attention.output.dense",
        "norm1": "attention.output.LayerNorm",
        "feed_forward.linear1": "intermediate.dense",
        "feed_forward.linear2": "output.dense",
        "norm2": "output.LayerNorm",
    }
    for i in range(num_layers):
        modules.update({f"bert.encoder.layers.{i}.{ours}": f"bert.encoder.layer.{i}.{theirs}"
                        for ours, theirs in per_layer.items()})
    for ours, theirs in modules.items():
        names.update({f"{ours}.{p}": f"{theirs}.{p}" for p in ("weight", "bias")})
    return names


@torch.no_grad()
def copy_from_transformers(ours: BertForPreTraining, theirs) -> BertForPreTraining:
    """Copy every weight of a ``transformers.BertForPreTraining`` with the same configuration into ``ours``."""
    for f in fields(BertConfig):
        if f.name != "backend" and getattr(theirs.config, f.name) != getattr(ours.config, f.name):
            raise ValueError(f"copy_from_transformers: config.{f.name} differs: ours "
                             f"{getattr(ours.config, f.name)!r}, theirs {getattr(theirs.config, f.name)!r}")
    if getattr(theirs.config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError("copy_from_transformers: only absolute position embeddings are supported")
    if theirs.cls.predictions.decoder.weight is not theirs.bert.embeddings.word_embeddings.weight:
        raise ValueError("copy_from_transformers: their MLM decoder is not tied to the word embeddings; ours is")

    names = transformers_parameter_names(ours.config.num_hidden_layers)
    our_parameters = dict(ours.named_parameters())  # the tied decoder weight appears once, as the embedding
    if set(names) != set(our_parameters):  # a mismatch here is a bug in the mapping, not bad input
        raise RuntimeError(f"parameter map out of date: {sorted(set(names) ^ set(our_parameters))}")
    their_state = theirs.state_dict()
    for our_name, their_name in names.items():
        source, target = their_state[their_name], our_parameters[our_name]
        if source.shape != target.shape:
            raise ValueError(f"copy_from_transformers: {their_name} has shape {tuple(source.shape)}, "
                             f"{our_name} expects {tuple(target.shape)}")
        target.copy_(source)
    return ours


# --------------------------------------------------------------------------------------------------
# The 80/10/10 masking procedure
# --------------------------------------------------------------------------------------------------


def mask_tokens(input_ids: torch.Tensor, *, special_token_ids, mask_token_id: int, vocab_size: int,
                generator: torch.Generator, attention_mask: torch.Tensor | None = None,
                mlm_probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose MLM targets and corrupt them as Devlin et al. 2019 (section 3.1 and appendix A.1) do.

    In each sequence, ``max(1, floor(mlm_probability * n + 0.5))`` of its ``n`` eligible tokens (neither
    special nor padding) are chosen uniformly without replacement, as the original ``create_pretraining_data.py``
    does; a sequence without eligible tokens gets none. Each chosen token independently becomes ``mask_token_id``
    with probability 0.8, a token drawn uniformly from the non-special vocabulary with probability 0.1, or stays
    unchanged with probability 0.1. ``mask_token_id`` always counts as special.

    Args:
        input_ids: int ``(B, N)``; not modified.
        special_token_ids: the ids never chosen and never drawn as random replacements ([CLS], [SEP], [PAD] ...).
        generator: the only source of randomness: the same generator state gives the same result.
        attention_mask: ``(B, N)``, 1 = real token, 0 = padding (padding is never chosen).

    Returns:
        ``(masked_input_ids, labels)``, both ``(B, N)``: labels hold the original id at chosen positions and
        ``-100`` everywhere else.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    check_token_ids("input_ids", input_ids, vocab_size)
    if not 0.0 < mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must lie in (0, 1], got {mlm_probability}")
    check_token_id("mask_token_id", mask_token_id, vocab_size)
    special = torch.tensor(sorted({*map(int, special_token_ids), mask_token_id}), dtype=input_ids.dtype)
    replacements = torch.arange(vocab_size)[~torch.isin(torch.arange(vocab_size), special)]  # (V - S,)
    if replacements.numel() == 0:
        raise ValueError("special_token_ids cover the whole vocabulary: no token is left to draw at random")
    padding = _key_padding_mask(attention_mask, input_ids.shape)

    # 1. Choose the targets: rank each row's tokens in a random order, ineligible ones last.
    device = input_ids.device
    eligible = ~torch.isin(input_ids, special.to(device))  # (B, N)
    if padding is not None:
        eligible &= ~padding
    n_eligible = eligible.sum(dim=1).double()  # (B,)
    n_chosen = torch.floor(n_eligible * mlm_probability + 0.5).clamp(min=1).minimum(n_eligible)  # (B,)
    keys = torch.rand(input_ids.shape, generator=generator, device=generator.device).to(device)
    keys = keys.masked_fill(~eligible, 2.0)  # uniform keys lie in [0, 1): ineligible tokens sort last
    rank = keys.argsort(dim=1).argsort(dim=1)  # (B, N): each token's place in its row's random order
    chosen = rank < n_chosen[:, None]  # (B, N)

    # 2. Corrupt them: 80% [MASK], 10% a random non-special token, 10% unchanged.
    action = torch.rand(input_ids.shape, generator=generator, device=generator.device).to(device)
    draws = torch.randint(len(replacements), input_ids.shape, generator=generator, device=generator.device)
    random_ids = replacements.to(generator.device)[draws].to(device=device, dtype=input_ids.dtype)  # (B, N)
    masked = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked, labels


# --------------------------------------------------------------------------------------------------
# Tokenization
# --------------------------------------------------------------------------------------------------


def load_vocab(path: str | Path = VOCAB_FILE) -> dict[str, int]:
    """The WordPiece vocabulary file, one token a line, as ``{token: id}`` (id = line number from 0)."""
    tokens = Path(path).read_text(encoding="utf-8").splitlines()
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: the vocabulary lists a token twice")
    return vocab


def load_tokenizer(path: str | Path = VOCAB_FILE):
    """transformers' ``BertTokenizer`` (lower-casing WordPiece) over the vocabulary file at ``path``.

    Loaded from the file's folder with ``local_files_only=True``: no model hub is ever contacted. The folder's
    vocabulary file must be named ``vocab.txt``, the name transformers looks for.
    """
    from transformers import BertTokenizer  # imported here: transformers is slow to import

    path = Path(path)
    if path.name != "vocab.txt":
        raise ValueError(f"path must name a file called vocab.txt, got {path}")
    tokenizer = BertTokenizer.from_pretrained(str(path.parent), local_files_only=True, do_lower_case=True,
                                              tokenize_chinese_chars=True)
    if len(tokenizer) != len(load_vocab(path)):
        raise RuntimeError(f"the tokenizer holds {len(tokenizer)} tokens, {path} lists {len(load_vocab(path))}")
    return tokenizer
