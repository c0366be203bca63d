"""The coverage map: which seed section is covered by which reference, oracle, test and kernel backend.

One :class:`Module` row per documented module, in :data:`MODULES`: the one table that declares, per
section, the reference, the oracle, its **kind** (one of :data:`ORACLE_KINDS`: ``library`` -- transformers,
torch.nn, PyG ...; ``closed form``; ``hand-computed case``; ``properties only``), the test file, and the seam
(``core``) through which a kernel can replace the module's hot loop.

Nothing else is a claim kept by hand. The backends a row shows are those a test *ran*: while the test suite
runs, :class:`SeamRecorder` wraps every backend the seams dispatch to (attention, aggregate, attention_aggregate,
readout: their registries in reference/backends.py) and notes, for each call, the backend and every documented
module whose code is on the call stack (so a GATConv run with ``backend="triton"`` credits the GAT row, and a
co-attention layer credits the co-attention and multi-head attention rows). The plugin in ``suites/conftest.py``
merges pytest-xdist workers and writes :data:`RECORDING` at the end of a complete run (the README's test command),
then applies :func:`check`:

* every section with a kernel seam (``core``) claims the kernel backend ``triton``: some module-level test
  must have run that module with it;
* the recording must come from a complete run of the current tree's test suite.

``status`` is ``done`` when the reference imports and its test file exists, ``pending`` otherwise.
The seed document's 30 sections are listed in ../shared/seed/SECTIONS.md.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = range(1, 31)
RECORDING = ROOT / "results" / "coverage" / "seams.json"  # written by complete test runs; gitignored
KERNEL_BACKEND = "triton"  # what a section with a kernel seam claims

LIBRARY, CLOSED_FORM, HAND_COMPUTED, PROPERTIES = "library", "closed form", "hand-computed case", "properties only"
ORACLE_KINDS = (LIBRARY, CLOSED_FORM, HAND_COMPUTED, PROPERTIES)


@dataclass(frozen=True)
class Module:
    name: str
    sections: tuple[int, ...]
    reference: str  # "package.module:attribute"
    oracle: str  # the independent implementation or property the reference is tested against
    kind: str  # the oracle's kind: one of ORACLE_KINDS (the strongest the row's test uses)
    test: str  # the test file, relative to the repository root
    core: str | None = None  # "attention" or "aggregation": the seam a kernel replaces
    entry_points: tuple[str, ...] = ()  # more "package.module:attribute" of this module that reach the seam


# The one table: each row's oracle kind is declared here (kind=...), next to the oracle it names.
MODULES: tuple[Module, ...] = (
    Module("BERT encoder, MLM and NSP heads", (1, 2), "reference.bert:BertForPreTraining",
           "transformers.BertForPreTraining (tiny config, copied weights) + BertTokenizer", LIBRARY,
           "suites/reference/test_bert.py", "attention", ("reference.bert:*",)),
    Module("BERT WordPiece tokenizer (English + the seed's Chinese characters)", (1,),
           "reference.tokenization:WordPieceTokenizer",
           "transformers.BertTokenizer (Rust tokenizers backend, tokenize_chinese_chars=True) over the shipped vocab",
           LIBRARY, "suites/reference/test_tokenization.py"),
    Module("scaled dot-product attention", (3,), "reference.attention:scaled_dot_product_attention",
           "torch.nn.functional.scaled_dot_product_attention + explicit math", LIBRARY,
           "suites/reference/test_attention.py", "attention", ("reference.attention:varlen_attention",)),
    Module("multi-head attention", (4,), "reference.attention:MultiHeadAttention",
           "torch.nn.MultiheadAttention(batch_first=True)", LIBRARY, "suites/reference/test_attention.py",
           "attention"),
    Module("transformer encoder / decoder", (5,), "reference.transformer:TransformerDecoder",
           "torch.nn.TransformerEncoderLayer / TransformerDecoderLayer", LIBRARY,
           "suites/reference/test_transformer.py", "attention", ("reference.transformer:*",)),
    Module("single-stream VL encoder (VisualBERT)", (6,), "reference.vlm:VisualBertEncoder",
           "transformers.VisualBertModel", LIBRARY, "suites/reference/test_vlm.py", "attention",
           ("reference.vlm:*",)),
    Module("VisualBERT pre-training (MLM with regions, sentence-image prediction)", (6,),
           "reference.vlm:VisualBertForPreTraining",
           "transformers.VisualBertForPreTraining (tiny config, copied weights): logits and losses", LIBRARY,
           "suites/reference/test_vlm.py", "attention"),
    Module("CLIP contrastive loss", (7,), "reference.contrastive:clip_loss",
           "transformers.CLIPModel(return_loss=True)", LIBRARY, "suites/reference/test_contrastive.py"),
    Module("CLIP dual encoder (towers, projections, temperature)", (7,), "reference.clip:ClipModel",
           "transformers.CLIPModel (tiny config, copied weights): logits_per_image, logits_per_text, loss", LIBRARY,
           "suites/reference/test_clip.py", "attention", ("reference.clip:*",)),
    Module("image-text matching head", (8,), "reference.matching:ImageTextMatchingHead",
           "hard-negative sampling properties + hand-computed case", HAND_COMPUTED,
           "suites/reference/test_matching.py"),
    Module("ITM fusion encoder (text cross-attending to patches, hard negatives)", (8,),
           "reference.matching:ImageTextMatchingModel",
           "transformers.BlipForImageTextRetrieval (tiny config, copied weights): use_itm_head=True logits, "
           "use_itm_head=False cosines, ITM loss on mined pairs", LIBRARY, "suites/reference/test_matching.py",
           "attention", ("reference.matching:FusionTextEncoder", "reference.matching:FusionEncoderLayer")),
    Module("prototypical networks", (9,), "reference.fewshot:PrototypicalNetwork",
           "hand-computed episode + library primitives (torch_geometric scatter mean, torch.cdist); no "
           "prototypical-network library imports here", LIBRARY, "suites/reference/test_fewshot.py"),
    Module("graph convolution (GCN)", (10, 18), "reference.gnn:GCNConv",
           "torch_geometric.nn.GCNConv + torch.sparse.mm", LIBRARY, "suites/reference/test_gnn.py", "aggregation"),
    Module("neural-symbolic fuzzy logic", (11,), "reference.neurosymbolic:FuzzyLogic",
           "LTNtorch fuzzy_ops (connectives, pMean/pMeanError quantifiers) + crisp truth tables, monotonicity",
           LIBRARY, "suites/reference/test_neurosymbolic.py"),
    Module("knowledge distillation", (12,), "reference.distillation:distillation_loss",
           "torch.nn.functional.kl_div + cross_entropy; closed-form T^2 gradient scaling", LIBRARY,
           "suites/reference/test_distillation.py"),
    Module("CNN backbone + projection", (13, 27), "reference.vision:ConvBackbone",
           "transformers.ResNetModel (tiny config, copied weights)", LIBRARY, "suites/reference/test_vision.py"),
    Module("VGG backbone", (13, 27), "reference.vgg:VGG",
           "hand-computed cases + torchvision's published parameter counts (no library: PyPI torchvision does not "
           "import beside CPU torch 2.13, timm needs it)", HAND_COMPUTED, "suites/reference/test_vgg.py"),
    Module("multimodal fusion model", (14,), "reference.fusion:MultimodalFusionModel",
           "permutation invariance, padding invariance, gradient flow, joint training, float32 vs float64; its "
           "co-attention part against transformers.LxmertXLayer", PROPERTIES, "suites/reference/test_fusion.py",
           "attention", ("reference.fusion:TextEncoder", "reference.fusion:RegionEncoder")),
    Module("multi-task learning", (15,), "reference.multitask:MultiTaskModel",
           "hand-computed task losses; closed-form weighted and uncertainty-weighted losses", CLOSED_FORM,
           "suites/reference/test_multitask.py"),
    Module("message passing (sum/mean/max)", (16,), "reference.gnn:MessagePassing",
           "torch_geometric.nn.MessagePassing / torch_geometric.utils.scatter", LIBRARY,
           "suites/reference/test_gnn.py", "aggregation", ("reference.gnn:aggregate",)),
    Module("graph attention (GAT)", (17,), "reference.gnn:GATConv", "torch_geometric.nn.GATConv", LIBRARY,
           "suites/reference/test_gnn.py", "aggregation", ("reference.gnn:attention_aggregate",)),
    Module("self-attention", (19,), "reference.attention:SelfAttention",
           "torch.nn.MultiheadAttention(batch_first=True)", LIBRARY, "suites/reference/test_attention.py",
           "attention"),
    Module("Vision Transformer", (20,), "reference.vit:VisionTransformer", "transformers.ViTModel", LIBRARY,
           "suites/reference/test_vit.py", "attention", ("reference.vit:*",)),
    Module("two-stream co-attention transformer", (21,), "reference.fusion:CoAttentionTransformer",
           "one layer vs transformers.LxmertXLayer (copied weights) and vs torch.nn.MultiheadAttention(kdim/vdim) "
           "+ nn.TransformerEncoderLayer; permutation equivariance, padding invariance, gradient flow", LIBRARY,
           "suites/reference/test_fusion.py", "attention",
           ("reference.fusion:CoAttentionLayer", "reference.fusion:CrossAttentionBlock")),
    Module("cross-modal prefix captioning", (22,), "reference.captioning:PrefixCaptioner",
           "transformers.GPT2LMHeadModel(inputs_embeds=[prefix; tokens], labels) and .generate(inputs_embeds), "
           "copied weights", LIBRARY, "suites/reference/test_captioning.py",
           "attention", ("reference.captioning:*",)),
    Module("adaptive attention with visual sentinel", (23,), "reference.adaptive_attention:AdaptiveAttention",
           "hand-computed case; limits: gate 0 = soft attention, gate 1 = sentinel; gradcheck", HAND_COMPUTED,
           "suites/reference/test_adaptive_attention.py"),
    Module("adaptive-attention caption decoder (LSTM + sentinel)", (23,),
           "reference.adaptive_attention:AdaptiveCaptionDecoder",
           "torch.nn.LSTMCell (recurrence, copied weights); closed-form gate limits; hand-computed two steps",
           LIBRARY, "suites/reference/test_adaptive_attention.py"),
    Module("image-text fusion classifier", (24,), "reference.fusion:ImageTextClassifier",
           "permutation invariance, padding invariance, gradient flow, float32 vs float64; its ViT part against "
           "transformers.ViTModel (section 20)", PROPERTIES, "suites/reference/test_fusion.py", "attention"),
    Module("decoder-only LM, KV cache, sampling", (25,), "reference.generation:DecoderLM",
           "transformers.GPT2LMHeadModel (tiny config, copied weights)", LIBRARY,
           "suites/reference/test_generation.py", "attention", ("reference.generation:*",)),
    Module("graph embedding (node2vec, readout)", (26,), "reference.graph_embedding:Node2Vec",
           "walks follow edges, p/q transition rates; two cliques separate; torch_geometric.nn.Node2Vec.loss "
           "and global_{add,mean,max}_pool", LIBRARY, "suites/reference/test_graph_embedding.py", "aggregation",
           ("reference.graph_embedding:*",)),
    Module("SimCLR NT-Xent", (28,), "reference.contrastive:nt_xent_loss",
           "pytorch_metric_learning.losses.NTXentLoss + hand-computed case", LIBRARY,
           "suites/reference/test_contrastive.py"),
    Module("SimCLR pipeline (views, encoder, projection head)", (28,), "reference.simclr:SimCLR",
           "pytorch_metric_learning.losses.NTXentLoss on the model's projections; augmentation steps with known "
           "results", LIBRARY, "suites/reference/test_simclr.py"),
    Module("transfer learning (freeze / fine-tune)", (29,), "reference.transfer:freeze",
           "frozen parameters get no gradient and never move; transformers.ResNetModel + new head: frozen "
           "BatchNorm statistics unchanged by a training step", LIBRARY, "suites/reference/test_transfer.py"),
    Module("meta-learning (MAML)", (30,), "reference.metalearning:maml_step",
           "closed-form meta-gradient on linear regression + finite differences", CLOSED_FORM,
           "suites/reference/test_metalearning.py"),
)


# --------------------------------------------------------------------------------------------------
# Recording what the tests ran through the seams
# --------------------------------------------------------------------------------------------------

_TESTS_KEPT = 3  # test ids kept per (module, backend): enough to find one, small enough to read


def _entry_table() -> dict[tuple[str, str], tuple[str, ...]]:
    """(python module, top-level name or "*") -> the names of the MODULES rows it belongs to."""
    table: dict[tuple[str, str], tuple[str, ...]] = {}
    for module in MODULES:
        for path in (module.reference, *module.entry_points):
            module_name, _, attribute = path.partition(":")
            table[(module_name, attribute)] = (*table.get((module_name, attribute), ()), module.name)
    return table


def _is_test_double(fn) -> bool:
    module = getattr(fn, "__module__", "") or ""
    return module.startswith(("suites.", "test_", "conftest", "correctness.", "harness.", "reference_tests."))


class SeamRecorder:
    """Notes (documented module, backend) for every backend call at the seams, attributed to the current test."""

    def __init__(self):
        self.current_test = ""
        self.pairs: dict[tuple[str, str], dict] = {}  # (module row name, backend) -> {"calls", "tests"}
        self.seams: dict[tuple[str, str], int] = {}  # (seam, backend) -> calls
        self._entries = _entry_table()
        self._lock = threading.Lock()
        self._previous = None  # the dispatch hook install() replaced

    def install(self) -> SeamRecorder:
        """Route every seam's backend dispatch through this recorder (until :meth:`uninstall`)."""
        from reference.backends import observe

        self._previous = observe(self._wrap)
        return self

    def uninstall(self) -> None:
        """Put back the hook this recorder replaced (another recorder's, or none)."""
        from reference.backends import observe

        observe(self._previous)

    def _wrap(self, seam: str, backend: str, fn):
        """What the seam calls instead of ``fn``: ``fn``, noting the call (a test's own double is not noted)."""
        if _is_test_double(fn):  # a backend a test registers to spy on the seam is no backend of the project
            return fn

        def recorded(*args, **kwargs):
            self.note(seam, backend, sys._getframe(1))
            return fn(*args, **kwargs)

        return recorded

    def _rows_on_stack(self, frame) -> set[str]:
        rows: set[str] = set()
        entries = self._entries
        while frame is not None:
            module_name = frame.f_globals.get("__name__", "")
            if module_name.startswith("reference."):
                code = frame.f_code
                rows.update(entries.get((module_name, code.co_qualname.split(".")[0]), ()))
                rows.update(entries.get((module_name, "*"), ()))
                if code.co_argcount and code.co_varnames[0] == "self":
                    owner = frame.f_locals.get("self")
                    for cls in type(owner).__mro__:
                        rows.update(entries.get((cls.__module__, cls.__name__), ()))
            frame = frame.f_back
        return rows

    def note(self, seam: str, backend: str, frame) -> None:
        rows = self._rows_on_stack(frame)
        with self._lock:
            self.seams[(seam, backend)] = self.seams.get((seam, backend), 0) + 1
            for row in rows:
                pair = self.pairs.setdefault((row, backend), {"calls": 0, "tests": []})
                pair["calls"] += 1
                if self.current_test and len(pair["tests"]) < _TESTS_KEPT and self.current_test not in pair["tests"]:
                    pair["tests"].append(self.current_test)

    def as_json(self) -> dict:
        return {"pairs": [{"module": m, "backend": b, **v} for (m, b), v in sorted(self.pairs.items())],
                "seams": [{"seam": s, "backend": b, "calls": n} for (s, b), n in sorted(self.seams.items())]}


def merge(parts: list[dict]) -> dict:
    """One recording from several (pytest-xdist workers): calls add up, test ids are pooled."""
    pairs: dict[tuple[str, str], dict] = {}
    seams: dict[tuple[str, str], int] = {}
    for part in parts:
        for p in part.get("pairs", ()):
            merged = pairs.setdefault((p["module"], p["backend"]), {"calls": 0, "tests": []})
            merged["calls"] += p["calls"]
            merged["tests"] = (merged["tests"] + [t for t in p["tests"] if t not in merged["tests"]])[:_TESTS_KEPT]
        for q in part.get("seams", ()):
            seams[(q["seam"], q["backend"])] = seams.get((q["seam"], q["backend"]), 0) + q["calls"]
    return {"pairs": [{"module": m, "backend": b, **v} for (m, b), v in sorted(pairs.items())],
            "seams": [{"seam": s, "backend": b, "calls": n} for (s, b), n in sorted(seams.items())]}


def write_recording(recording: dict, scope: dict, path: Path = RECORDING) -> Path:
    """Write the merged recording with the commit and the run's scope (atomically: a reader never sees half)."""
    from fusebench.device import git_commit

    commit, dirty = git_commit()
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"schema": 1, "commit": commit, "dirty": dirty, "scope": scope, **recording}
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=1) + "\n")
    partial.replace(path)
    return path


def read_recording(path: Path = RECORDING) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def backends_by_module(recording: dict | None) -> dict[str, list[str]]:
    """Module row name -> the backends some test ran it with (from a recording)."""
    found: dict[str, set[str]] = {}
    for pair in (recording or {}).get("pairs", ()):
        found.setdefault(pair["module"], set()).add(pair["backend"])
    return {name: sorted(backends) for name, backends in found.items()}


def check(recording: dict | None, *, current_commit: str | None = None) -> list[str]:
    """Why the coverage map is not honest, one line per problem (an empty list: it is).

    * no recording, or one from a partial run or another commit: the map would show what did not run here;
    * a section with a kernel seam whose module no test ran with the kernel backend;
    * a row whose oracle kind is not one of ORACLE_KINDS.
    """
    problems = [f"{m.name} (sections {','.join(map(str, m.sections))}): oracle kind {m.kind!r} is not one of "
                f"{ORACLE_KINDS}" for m in MODULES if m.kind not in ORACLE_KINDS]
    if recording is None:
        return problems + [f"no recording at {RECORDING.relative_to(ROOT)}: run the README's test command "
                           "(a complete run writes it)"]
    if current_commit is not None and recording.get("commit") != current_commit:
        problems.append(f"the recording is of commit {recording.get('commit')}, HEAD is {current_commit}: "
                        "run the README's test command again")
    tested = backends_by_module(recording)
    for m in MODULES:
        if m.core is None:
            continue
        if KERNEL_BACKEND not in tested.get(m.name, ()):
            ran = ", ".join(tested.get(m.name, ())) or "nothing"
            problems.append(f"{m.name} (sections {','.join(map(str, m.sections))}) claims the {KERNEL_BACKEND} "
                            f"kernel through its {m.core} seam, but no module-level test ran it with "
                            f"backend={KERNEL_BACKEND!r} (tests ran: {ran})")
    return problems


# --------------------------------------------------------------------------------------------------
# The table `fusebench list` prints
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    sections: list[int]
    reference: str
    oracle: str
    kind: str
    test: str
    backends: list[str] = field(default_factory=list)  # the backends a test ran it with (recorded)
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


def coverage_rows(recording: dict | None = None) -> list[Row]:
    """The rows of ``fusebench list``; backends come from ``recording`` (none without one)."""
    tested = backends_by_module(recording)
    rows = []
    for module in MODULES:
        done = _resolves(module.reference) and (ROOT / module.test).is_file()
        rows.append(Row(module.name, list(module.sections), module.reference, module.oracle, module.kind, module.test,
                        tested.get(module.name, []), "done" if done else "pending"))
    return rows


def uncovered_sections() -> list[int]:
    covered = {s for module in MODULES for s in module.sections}
    return [s for s in SECTIONS if s not in covered]


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(row) for row in rows]


def format_table(rows: list[Row], recording: dict | None = None) -> str:
    header = ("sections", "module", "status", "tested backends", "oracle kind", "reference", "oracle")
    lines = [
        (",".join(map(str, r.sections)), r.name, r.status, ",".join(r.backends) or "-", r.kind, r.reference, r.oracle)
        for r in sorted(rows, key=lambda r: r.sections[0])
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    widths[-1] = 0  # the oracle column runs to the end of the line
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    done = sum(r.status == "done" for r in rows)
    footer = [f"{done} of {len(rows)} modules done; sections covered: {30 - len(uncovered_sections())} of 30"]
    if recording is None:
        footer.append(f"tested backends: no recording yet ({RECORDING.relative_to(ROOT)} is written by a complete run "
                      "of the README's test command)")
    else:
        dirty = " (with uncommitted changes)" if recording.get("dirty") else ""
        tests = recording.get("scope", {}).get("tests", "?")
        footer.append(f"tested backends: recorded through the seams by the test run of commit "
                      f"{str(recording.get('commit'))[:12]}{dirty}, {tests} tests")
    return "\n".join([fmt(header), fmt(["-" * w for w in widths[:-1]] + ["------"]), *map(fmt, lines), *footer])
