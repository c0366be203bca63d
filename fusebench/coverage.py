"""The coverage map: which seed section is covered by which reference, oracle, test and kernel backend.

One :class:`Module` row per documented module. Nothing here is a claim to be kept up to date by
hand: a row's ``status`` is computed (``done`` when its reference imports and its test file exists,
``pending`` otherwise) and its ``backends`` are the backends that actually load here for its core.
The seed document's 30 sections are listed in ../shared/seed/SECTIONS.md.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = range(1, 31)


@dataclass(frozen=True)
class Module:
    name: str
    sections: tuple[int, ...]
    reference: str  # "package.module:attribute"
    oracle: str  # the independent implementation or property the reference is tested against
    test: str  # the test file, relative to the repository root
    core: str | None = None  # "attention" or "aggregation": the seam a kernel replaces


MODULES: tuple[Module, ...] = (
    Module("BERT encoder, MLM and NSP heads", (1, 2), "reference.bert:BertForPreTraining",
           "transformers.BertForPreTraining (tiny config, copied weights) + BertTokenizer",
           "suites/reference/test_bert.py", "attention"),
    Module("BERT WordPiece tokenizer (English + the seed's Chinese characters)", (1,),
           "reference.tokenization:WordPieceTokenizer",
           "transformers.BertTokenizer (Rust tokenizers backend, tokenize_chinese_chars=True) over the shipped vocab",
           "suites/reference/test_tokenization.py"),
    Module("scaled dot-product attention", (3,), "reference.attention:scaled_dot_product_attention",
           "torch.nn.functional.scaled_dot_product_attention + explicit math",
           "suites/reference/test_attention.py", "attention"),
    Module("multi-head attention", (4,), "reference.attention:MultiHeadAttention",
           "torch.nn.MultiheadAttention(batch_first=True)", "suites/reference/test_attention.py", "attention"),
    Module("transformer encoder / decoder", (5,), "reference.transformer:TransformerDecoder",
           "torch.nn.TransformerEncoderLayer / TransformerDecoderLayer", "suites/reference/test_transformer.py",
           "attention"),
    Module("single-stream VL encoder (VisualBERT)", (6,), "reference.vlm:VisualBertEncoder",
           "transformers.VisualBertModel", "suites/reference/test_vlm.py", "attention"),
    Module("VisualBERT pre-training (MLM with regions, sentence-image prediction)", (6,),
           "reference.vlm:VisualBertForPreTraining",
           "transformers.VisualBertForPreTraining (tiny config, copied weights): logits and losses",
           "suites/reference/test_vlm.py", "attention"),
    Module("CLIP contrastive loss", (7,), "reference.contrastive:clip_loss",
           "transformers.CLIPModel(return_loss=True)", "suites/reference/test_contrastive.py"),
    Module("CLIP dual encoder (towers, projections, temperature)", (7,), "reference.clip:ClipModel",
           "transformers.CLIPModel (tiny config, copied weights): logits_per_image, logits_per_text, loss",
           "suites/reference/test_clip.py", "attention"),
    Module("image-text matching head", (8,), "reference.matching:ImageTextMatchingHead",
           "hard-negative sampling properties + hand-computed case", "suites/reference/test_matching.py"),
    Module("ITM fusion encoder (text cross-attending to patches, hard negatives)", (8,),
           "reference.matching:ImageTextMatchingModel",
           "transformers.BlipForImageTextRetrieval (tiny config, copied weights): use_itm_head=True logits, "
           "use_itm_head=False cosines, ITM loss on mined pairs", "suites/reference/test_matching.py", "attention"),
    Module("prototypical networks", (9,), "reference.fewshot:PrototypicalNetwork",
           "hand-computed episode + library primitives (torch_geometric scatter mean, torch.cdist); no "
           "prototypical-network library imports here", "suites/reference/test_fewshot.py"),
    Module("graph convolution (GCN)", (10, 18), "reference.gnn:GCNConv",
           "torch_geometric.nn.GCNConv + torch.sparse.mm", "suites/reference/test_gnn.py", "aggregation"),
    Module("neural-symbolic fuzzy logic", (11,), "reference.neurosymbolic:FuzzyLogic",
           "LTNtorch fuzzy_ops (connectives, pMean/pMeanError quantifiers) + crisp truth tables, monotonicity",
           "suites/reference/test_neurosymbolic.py"),
    Module("knowledge distillation", (12,), "reference.distillation:distillation_loss",
           "torch.nn.functional.kl_div + cross_entropy; closed-form T^2 gradient scaling",
           "suites/reference/test_distillation.py"),
    Module("CNN backbone + projection", (13, 27), "reference.vision:ConvBackbone",
           "transformers.ResNetModel (tiny config, copied weights)", "suites/reference/test_vision.py"),
    Module("VGG backbone", (13, 27), "reference.vgg:VGG",
           "hand-computed cases + torchvision's published parameter counts (no library: PyPI torchvision does not "
           "import beside CPU torch 2.13, timm needs it)", "suites/reference/test_vgg.py"),
    Module("multimodal fusion model", (14,), "reference.fusion:MultimodalFusionModel",
           "permutation equivariance, padding invariance, gradient flow", "suites/reference/test_fusion.py",
           "attention"),
    Module("multi-task learning", (15,), "reference.multitask:MultiTaskModel",
           "hand-computed task losses; closed-form weighted and uncertainty-weighted losses",
           "suites/reference/test_multitask.py"),
    Module("message passing (sum/mean/max)", (16,), "reference.gnn:MessagePassing",
           "torch_geometric.nn.MessagePassing / torch_geometric.utils.scatter", "suites/reference/test_gnn.py",
           "aggregation"),
    Module("graph attention (GAT)", (17,), "reference.gnn:GATConv", "torch_geometric.nn.GATConv",
           "suites/reference/test_gnn.py", "aggregation"),
    Module("self-attention", (19,), "reference.attention:SelfAttention",
           "torch.nn.MultiheadAttention(batch_first=True)", "suites/reference/test_attention.py", "attention"),
    Module("Vision Transformer", (20,), "reference.vit:VisionTransformer", "transformers.ViTModel",
           "suites/reference/test_vit.py", "attention"),
    Module("two-stream co-attention transformer", (21,), "reference.fusion:CoAttentionTransformer",
           "permutation equivariance, padding invariance, gradient flow; one layer vs "
           "torch.nn.MultiheadAttention(kdim/vdim) + nn.TransformerEncoderLayer", "suites/reference/test_fusion.py",
           "attention"),
    Module("cross-modal prefix captioning", (22,), "reference.captioning:PrefixCaptioner",
           "transformers.GPT2LMHeadModel(inputs_embeds=[prefix; tokens], labels) and .generate(inputs_embeds), "
           "copied weights", "suites/reference/test_captioning.py",
           "attention"),
    Module("adaptive attention with visual sentinel", (23,), "reference.adaptive_attention:AdaptiveAttention",
           "hand-computed case; limits: gate 0 = soft attention, gate 1 = sentinel; gradcheck",
           "suites/reference/test_adaptive_attention.py"),
    Module("adaptive-attention caption decoder (LSTM + sentinel)", (23,),
           "reference.adaptive_attention:AdaptiveCaptionDecoder",
           "torch.nn.LSTMCell (recurrence, copied weights); closed-form gate limits; hand-computed two steps",
           "suites/reference/test_adaptive_attention.py"),
    Module("image-text fusion classifier", (24,), "reference.fusion:ImageTextClassifier",
           "permutation equivariance, padding invariance, gradient flow", "suites/reference/test_fusion.py",
           "attention"),
    Module("decoder-only LM, KV cache, sampling", (25,), "reference.generation:DecoderLM",
           "transformers.GPT2LMHeadModel (tiny config, copied weights)", "suites/reference/test_generation.py",
           "attention"),
    Module("graph embedding (node2vec, readout)", (26,), "reference.graph_embedding:Node2Vec",
           "walks follow edges, p/q transition rates; two cliques separate; torch_geometric.nn.Node2Vec.loss "
           "and global_{add,mean,max}_pool", "suites/reference/test_graph_embedding.py", "aggregation"),
    Module("SimCLR NT-Xent", (28,), "reference.contrastive:nt_xent_loss",
           "pytorch_metric_learning.losses.NTXentLoss + hand-computed case", "suites/reference/test_contrastive.py"),
    Module("SimCLR pipeline (views, encoder, projection head)", (28,), "reference.simclr:SimCLR",
           "pytorch_metric_learning.losses.NTXentLoss on the model's projections; augmentation steps with known "
           "results", "suites/reference/test_simclr.py"),
    Module("transfer learning (freeze / fine-tune)", (29,), "reference.transfer:freeze",
           "frozen parameters get no gradient and never move; transformers.ResNetModel + new head: frozen "
           "BatchNorm statistics unchanged by a training step", "suites/reference/test_transfer.py"),
    Module("meta-learning (MAML)", (30,), "reference.metalearning:maml_step",
           "closed-form meta-gradient on linear regression + finite differences",
           "suites/reference/test_metalearning.py"),
)


@dataclass
class Row:
    name: str
    sections: list[int]
    reference: str
    oracle: str
    test: str
    backends: list[str] = field(default_factory=list)
    status: str = "pending"


def _resolves(path: str) -> bool:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            return False  # the module itself is missing: pending, not broken
        raise
    return hasattr(module, attribute)


def _core_backends(core: str | None) -> list[str]:
    if core == "attention":
        from reference.attention import attention_backends

        return attention_backends()
    if core == "aggregation":
        try:
            gnn = importlib.import_module("reference.gnn")
        except ModuleNotFoundError:
            return []
        return gnn.aggregation_backends() if hasattr(gnn, "aggregation_backends") else []
    return []


def coverage_rows() -> list[Row]:
    rows = []
    for module in MODULES:
        done = _resolves(module.reference) and (ROOT / module.test).is_file()
        rows.append(Row(module.name, list(module.sections), module.reference, module.oracle, module.test,
                        _core_backends(module.core) if done else [], "done" if done else "pending"))
    return rows


def uncovered_sections() -> list[int]:
    covered = {s for module in MODULES for s in module.sections}
    return [s for s in SECTIONS if s not in covered]


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(row) for row in rows]


def format_table(rows: list[Row]) -> str:
    header = ("sections", "module", "status", "backends", "reference", "oracle")
    lines = [
        (",".join(map(str, r.sections)), r.name, r.status, ",".join(r.backends) or "-", r.reference, r.oracle)
        for r in sorted(rows, key=lambda r: r.sections[0])
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    widths[-1] = 0  # the oracle column runs to the end of the line
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    done = sum(r.status == "done" for r in rows)
    footer = f"{done} of {len(rows)} modules done; sections covered: {30 - len(uncovered_sections())} of 30"
    return "\n".join([fmt(header), fmt(["-" * w for w in widths[:-1]] + ["------"]), *map(fmt, lines), footer])
