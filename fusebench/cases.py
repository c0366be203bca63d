"""The case catalog: named, realistic workloads shared by benchmarks, asv and correctness suites.

A case names one workload (op, shape, flags, graph family and size) so that ``bert-base-512`` means the
same tensors in a pytest-benchmark run, an asv history and a correctness test. Every case has two
sizes: the real one, benchmarked on GPUs, and a CPU-sized variant with the same structure (head
dimension, causality, GQA ratio, graph family and degree) with fewer heads, tokens or nodes, at a size
a 2-core machine handles in well under a second.
:func:`get` picks the size for a device; ``case.size`` says which one a result came from.

Inputs are generated from the case deterministically: a fixed per-case seed (derived from its name,
independent of the run seed, so two runs benchmark the very same numbers) unless a caller passes its
own, drawn with :func:`fusebench.inputs.random_tensor` (never zeros).

Attention families: ``bert-base`` (12 heads, d 64, a sequence-length sweep around BERT's 512), ``vit-b16``
(197 tokens: 14 x 14 patches + CLS), ``gpt-gqa`` (32 query heads over 8 key/value heads, d 128, causal),
``clip-text`` (77 tokens, causal, as CLIP's text encoder), ``varlen`` (a packed batch of unequal lengths).
Graph families: ``cora-like`` (2,708 nodes, 10,556 edges), ``arxiv-like`` (169,343 nodes, 1.17M edges,
power-law degrees), ``reddit-like`` (dense, average degree in the hundreds), and an ``er-degree`` sweep
(Erdos-Renyi at fixed size, rising average degree) for the GB/s-versus-degree plot.
Whole models (suite ``models``, :class:`ModelCase`): what a user runs rather than one op: a transformers
model's forward pass or greedy ``generate()``, a two-layer PyG GCN or GAT; how they are built and run on
each provider is :mod:`fusebench.integrations.benchmarks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from fusebench.inputs import random_tensor, seed_for

__all__ = ["AttentionCase", "GraphCase", "ModelCase", "CATALOG", "SUITES", "OP_SUITES", "get", "names", "for_device",
           "MODES", "CPU_MODES"]

# The op-level suites time one attention call or one aggregation (they have FLOP and byte models, a roofline,
# and backward modes); ``models`` times whole models.
OP_SUITES = ("attention", "graph")
SUITES = (*OP_SUITES, "models")

MODES = ("forward", "backward", "forward+backward")
CPU_MODES = ("forward", "backward")  # the default on a CPU, where forward+backward adds little but time
# The FLOP model: a backward pass costs 2.5 forwards (five matmuls to the forward's two),
# forward + backward 3.5.
_MODE_FLOP_FACTOR = {"forward": 1.0, "backward": 2.5, "forward+backward": 3.5}
# Case seeds are fixed (not drawn per run), so every run of a case times the very same numbers.
_CASE_SEED_BASE = 20240601
_MODEL_SEED_BASE = 20240602


def _case_seed(name: str) -> int:
    return seed_for("case", name, base=_CASE_SEED_BASE)


@dataclass(frozen=True)
class AttentionCase:
    """One attention workload: ``softmax(q k^T / sqrt(D) [+ causal mask]) v``.

    ``seqlens`` makes it a varlen case: the sequences are packed along one token axis (``batch`` is
    then the number of sequences) and each attends only to itself.
    """

    name: str
    family: str
    batch: int
    heads: int
    kv_heads: int
    seq_q: int
    seq_k: int
    head_dim: int
    causal: bool = False
    seqlens: tuple[int, ...] | None = None
    size: str = "gpu"  # "gpu" (the real size) or "cpu" (the CPU-sized variant)
    suite: str = "attention"

    @property
    def axis_value(self) -> int:
        """The value plots put on the x axis: the key sequence length (the longest, for varlen)."""
        return max(self.seqlens) if self.seqlens else self.seq_k

    @property
    def seed(self) -> int:
        return _case_seed(self.name)

    def shape_text(self) -> str:
        heads = f"H{self.heads}" if self.heads == self.kv_heads else f"Hq{self.heads}/Hkv{self.kv_heads}"
        if self.seqlens:
            return f"varlen{list(self.seqlens)} {heads} D{self.head_dim}" + (" causal" if self.causal else "")
        n = f"N{self.seq_q}" if self.seq_q == self.seq_k else f"Nq{self.seq_q}/Nk{self.seq_k}"
        return f"B{self.batch} {heads} {n} D{self.head_dim}" + (" causal" if self.causal else "")

    def flops(self, mode: str) -> float:
        """Matmul FLOPs: forward ``4 B H Nq Nk D`` (Q K^T and P V, two FLOPs per multiply-add), halved when causal;
        the backward's five matmuls count 2.5 times the forward (``_MODE_FLOP_FACTOR``).

        Halving is the usual convention (FlashAttention's benchmarks) for ``Nq == Nk``; the masked
        half is work a kernel may skip, so counting it would flatter the kernels that do not skip it.
        """
        if mode not in _MODE_FLOP_FACTOR:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        pairs = sum(n * n for n in self.seqlens) if self.seqlens else self.batch * self.seq_q * self.seq_k
        forward = 4.0 * self.heads * pairs * self.head_dim
        if self.causal:
            forward /= 2
        return forward * _MODE_FLOP_FACTOR[mode]

    def inputs(self, *, dtype: torch.dtype = torch.float32, device="cpu", seed: int | None = None) -> dict:
        """``q``, ``k``, ``v`` and ``dout`` (the output gradient), drawn in float64 then cast.

        Dense cases: ``(B, H, N, D)``. Varlen cases: packed ``(total, H, D)`` plus int32
        ``cu_seqlens`` (the same offsets for queries and keys).
        """
        seed = self.seed if seed is None else seed
        if self.seqlens:
            total = sum(self.seqlens)
            shapes = {"q": (total, self.heads, self.head_dim), "k": (total, self.kv_heads, self.head_dim),
                      "v": (total, self.kv_heads, self.head_dim), "dout": (total, self.heads, self.head_dim)}
        else:
            shapes = {"q": (self.batch, self.heads, self.seq_q, self.head_dim),
                      "k": (self.batch, self.kv_heads, self.seq_k, self.head_dim),
                      "v": (self.batch, self.kv_heads, self.seq_k, self.head_dim),
                      "dout": (self.batch, self.heads, self.seq_q, self.head_dim)}
        tensors = {key: random_tensor(shape, seed=seed_for(seed, key, base=0), dtype=dtype, device=device)
                   for key, shape in shapes.items()}
        if self.seqlens:
            offsets = [0]
            for n in self.seqlens:
                offsets.append(offsets[-1] + n)
            tensors["cu_seqlens"] = torch.tensor(offsets, dtype=torch.int32, device=device)
        return tensors


@dataclass(frozen=True)
class GraphCase:
    """One neighbour-aggregation workload on a generated graph.

    ``op``: ``"gcn"`` (sum with the symmetric normalization ``D^-1/2 (A+I) D^-1/2``), ``"sum"``,
    ``"mean"``, ``"max"`` (plain message passing), or ``"gat"`` (attention-weighted sum over incoming
    edges, ``heads`` heads of ``features // heads`` channels).
    """

    name: str
    family: str
    op: str
    generator: str  # "erdos_renyi", "power_law" or "grid_2d" (reference.graph_generators)
    num_nodes: int
    avg_degree: float  # edges = num_nodes * avg_degree
    features: int
    heads: int = 1
    size: str = "gpu"
    suite: str = "graph"

    @property
    def num_edges(self) -> int:
        return int(round(self.num_nodes * self.avg_degree))

    @property
    def aggregated_edges(self) -> int:
        """The edges an aggregation runs over: GCN aggregates over ``A + I``, so each node adds its self-loop
        (the providers add them, as GCNConv does); the other ops use the graph as generated."""
        return self.num_edges + (self.num_nodes if self.op == "gcn" else 0)

    @property
    def axis_value(self) -> float:
        """The value plots put on the x axis: the average degree."""
        return self.avg_degree

    @property
    def seed(self) -> int:
        return _case_seed(self.name)

    def shape_text(self) -> str:
        heads = f" heads {self.heads}" if self.op == "gat" else ""
        return f"{self.generator} N{self.num_nodes} E{self.num_edges} F{self.features}{heads}"

    def bytes_moved(self, mode: str, *, value_bytes: int, index_bytes: int = 8, num_edges: int | None = None) -> float:
        """The byte model for GB/s: what a CSR aggregation must move at least once per use.

        Forward: every edge gathers its source's feature row (``E * F`` values; the reuse a cache may
        give is the kernel's gain, not counted), reads its column index (``E`` indices) and, for
        ``gcn``, its normalization weight (``E`` values); the row pointers (``N + 1`` indices) are
        read once and the output (``N * F`` values) written once. ``gat`` adds per-edge reads of the
        source attention term (``E * heads`` values) and one read of the destination term
        (``N * heads``). Backward: the input gradient is the same aggregation over the transposed
        graph, so the same bytes (``gat``: see below); forward + backward is forward plus backward.
        ``num_edges`` defaults to :attr:`aggregated_edges` (GCN's self-loops included).

        ``gat`` backward reads more than its forward: each edge gathers both the destination's output
        gradient (for ``dx``) and the source's features (for the score gradient ``dout_i . x_j``), and both
        attention terms (``2 E heads`` values); it writes ``dx`` (``N F``) and the two attention-term
        gradients (``2 N heads``), besides the indices.
        """
        if mode not in _MODE_FLOP_FACTOR:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        e = self.aggregated_edges if num_edges is None else num_edges
        n, f, b = self.num_nodes, self.features, value_bytes
        indices = e * index_bytes + (n + 1) * index_bytes
        forward = e * f * b + indices + n * f * b
        if self.op == "gcn":
            forward += e * b
        backward = forward
        if self.op == "gat":
            forward += e * self.heads * b + n * self.heads * b
            backward = 2 * e * f * b + 2 * e * self.heads * b + indices + n * f * b + 2 * n * self.heads * b
        return {"forward": forward, "backward": backward, "forward+backward": forward + backward}[mode]

    def features_input(self, *, dtype=torch.float32, device="cpu", seed: int | None = None) -> dict:
        """Node features ``x`` and the output gradient ``dout``; for ``gat`` also ``alpha_src``/``alpha_dst``.

        ``x`` is ``(N, F)``, or ``(N, heads, F // heads)`` for ``gat`` (PyG's GATConv layout).
        """
        seed = self.seed if seed is None else seed
        n = self.num_nodes
        x_shape = (n, self.heads, self.features // self.heads) if self.op == "gat" else (n, self.features)
        shapes = {"x": x_shape, "dout": x_shape}
        if self.op == "gat":
            shapes |= {"alpha_src": (n, self.heads), "alpha_dst": (n, self.heads)}
        return {key: random_tensor(shape, seed=seed_for(seed, key, base=0), dtype=dtype, device=device)
                for key, shape in shapes.items()}


@dataclass(frozen=True)
class ModelCase:
    """One whole-model workload. ``model`` names the builder; ``dims`` its sizes; ``task`` what is timed
    (``"forward"``: one forward pass; ``"generate"``: greedy generation of ``new_tokens`` tokens)."""

    name: str
    family: str
    framework: str  # "transformers" or "pyg"
    task: str  # "forward" or "generate"
    model: str  # "bert", "vit", "llama", "gcn", "gat"
    dims: dict = field(hash=False)  # hidden, layers, heads, kv_heads, ffn, image, patch, features, ...
    batch: int = 1
    tokens: int = 0  # sequence length (text), or nodes (graphs)
    new_tokens: int = 0  # generate only
    graph: str = ""  # reference.graph_generators name (graphs)
    size: str = "gpu"
    suite: str = "models"

    @property
    def axis_value(self) -> int:
        """The value plots put on the x axis: tokens (or nodes)."""
        return self.tokens

    @property
    def seed(self) -> int:
        return seed_for("model-case", self.name, base=_MODEL_SEED_BASE)

    def shape_text(self) -> str:
        d = self.dims
        if self.framework == "pyg":
            return f"{self.graph} N{self.tokens} F{d['features']} hidden {d['hidden']} x{d['layers']}"
        grouped = d.get("kv_heads", d["heads"]) != d["heads"]
        heads = f"Hq{d['heads']}/Hkv{d['kv_heads']}" if grouped else f"H{d['heads']}"
        text = f"B{self.batch} N{self.tokens} {d['layers']}x{d['hidden']} {heads}"
        return text + (f" +{self.new_tokens} tokens" if self.task == "generate" else "")


# --------------------------------------------------------------------------------------------------
# The catalog: (real size, CPU-sized variant) per name
# --------------------------------------------------------------------------------------------------


def _attention(name, family, gpu: dict, cpu: dict, **common) -> tuple[AttentionCase, AttentionCase]:
    real = AttentionCase(name=name, family=family, **common, **gpu)
    return real, replace(real, size="cpu", **cpu)


def _bert(n: int) -> tuple[AttentionCase, AttentionCase]:
    # BERT-base: 12 heads of 64; batch 8 as in fine-tuning. CPU: one sequence, 4 heads, a quarter of the length.
    return _attention(f"bert-base-{n}", "bert-base", dict(batch=8, seq_q=n, seq_k=n),
                      dict(batch=1, heads=4, kv_heads=4, seq_q=n // 4, seq_k=n // 4), heads=12, kv_heads=12,
                      head_dim=64)


def _varlen(*seqlens: int) -> dict:
    # A varlen case's batch is its number of sequences; seq_q and seq_k record the longest.
    return dict(seqlens=seqlens, batch=len(seqlens), seq_q=max(seqlens), seq_k=max(seqlens))


def _graph(name, family, op, generator, gpu: dict, cpu: dict, **common) -> tuple[GraphCase, GraphCase]:
    # CPU variants keep the family and degree but use 32 features (8192 nodes at most, except the sweep).
    real = GraphCase(name=name, family=family, op=op, generator=generator, **common, **gpu)
    return real, replace(real, size="cpu", **cpu)


_PAIRS: list[tuple] = [
    *(_bert(n) for n in (128, 256, 512, 1024, 2048)),
    # ViT-B/16 at 224 px: 14 x 14 patches + the CLS token = 197 tokens, 12 heads of 64.
    _attention("vit-b16-224", "vit-b16", dict(batch=32), dict(batch=1, heads=4, kv_heads=4),
               heads=12, kv_heads=12, seq_q=197, seq_k=197, head_dim=64),
    # A Llama-style decoder: 32 query heads sharing 8 key/value heads, d 128, causal, 8k context.
    _attention("gpt-gqa-8k", "gpt-gqa", dict(seq_q=8192, seq_k=8192),
               dict(heads=4, kv_heads=1, seq_q=256, seq_k=256), batch=1, heads=32, kv_heads=8, head_dim=128,
               causal=True),
    # CLIP's text encoder: 77 tokens, 8 heads of 64, causal mask.
    _attention("clip-text-77", "clip-text", dict(batch=256), dict(batch=2),
               heads=8, kv_heads=8, seq_q=77, seq_k=77, head_dim=64, causal=True),
    # A packed batch of unequal lengths, including a single token and awkward sizes.
    _attention("varlen-mixed", "varlen", _varlen(512, 1024, 97, 2048, 333, 4096, 1),
               dict(_varlen(17, 64, 97, 128, 1), heads=4, kv_heads=4), heads=16, kv_heads=16, head_dim=64),
    # Cora: 2,708 nodes, 10,556 directed edges; aggregation after the first linear layer (64 wide).
    *(_graph(f"{op}/cora-like", "cora-like", op, "power_law", dict(num_nodes=2708, avg_degree=3.9),
             dict(num_nodes=2708, avg_degree=3.9, features=32), features=64, heads=heads)
      for op, heads in (("gcn", 1), ("gat", 8))),
    # ogbn-arxiv: 169,343 nodes, 1,166,243 edges, power-law degrees, 128 features.
    *(_graph(f"{op}/arxiv-like", "arxiv-like", op, "power_law", dict(num_nodes=169_343, avg_degree=6.9),
             dict(num_nodes=8192, avg_degree=6.9, features=32), features=128, heads=heads)
      for op, heads in (("gcn", 1), ("sum", 1), ("mean", 1), ("max", 1), ("gat", 8))),
    # Reddit is dense (average degree ~490); the real graph (114M edges) is scaled to 20M edges.
    _graph("gcn/reddit-like", "reddit-like", "gcn", "erdos_renyi", dict(num_nodes=50_000, avg_degree=400.0),
           dict(num_nodes=1024, avg_degree=100.0, features=32), features=128),
    # Degree sweep at a fixed size: GB/s against average degree.
    *(_graph(f"gcn/er-degree-{d}", "er-degree", "gcn", "erdos_renyi", dict(num_nodes=100_000, avg_degree=float(d)),
             dict(num_nodes=2048, avg_degree=float(d), features=32), features=128)
      for d in (2, 8, 32, 128)),
]


def _model(real: ModelCase, **cpu) -> tuple[ModelCase, ModelCase]:
    return real, replace(real, size="cpu", **cpu)


# CPU variants: two layers of width 64 with the real model's head structure (GQA kept), tiny vocabularies.
_TINY_TEXT = dict(hidden=64, layers=2, heads=4, kv_heads=4, ffn=128, vocab=1000)
_TINY_GQA = dict(_TINY_TEXT, kv_heads=2)
_LLAMA_GQA = dict(hidden=2048, layers=8, heads=16, kv_heads=4, ffn=5632, vocab=32000)
_MODEL_PAIRS: list[tuple] = [
    # BERT-base encoder (12 layers, 12 heads of 64), batch 8 x 512 tokens, one padded row.
    _model(ModelCase("bert-base-512-model", "bert-base", "transformers", "forward", "bert",
                     dict(hidden=768, layers=12, heads=12, kv_heads=12, ffn=3072, vocab=30522), batch=8, tokens=512),
           dims=_TINY_TEXT, batch=2, tokens=48),
    # ViT-B/16 at 224 px (197 tokens), batch 32.
    _model(ModelCase("vit-b16-224-model", "vit-b16", "transformers", "forward", "vit",
                     dict(hidden=768, layers=12, heads=12, kv_heads=12, ffn=3072, image=224, patch=16), batch=32,
                     tokens=197),
           dims=dict(_TINY_TEXT, image=32, patch=8), batch=2, tokens=17),
    # A Llama-style decoder (16 query heads over 4 key/value heads, d 128), 2,048 tokens.
    _model(ModelCase("llama-gqa-2k", "llama-gqa", "transformers", "forward", "llama", _LLAMA_GQA, batch=1,
                     tokens=2048),
           dims=_TINY_GQA, batch=1, tokens=64),
    # The same decoder: greedy generate() of 64 tokens after a left-padded batch of 4 prompts of up to 512.
    _model(ModelCase("llama-gqa-generate", "llama-gqa", "transformers", "generate", "llama", _LLAMA_GQA, batch=4,
                     tokens=512, new_tokens=64),
           dims=_TINY_GQA, batch=2, tokens=16, new_tokens=4),
    # torch_geometric.nn.models.GCN / GAT, two layers, on the graph catalog's generators.
    _model(ModelCase("gcn-2layer/cora-like", "cora-like", "pyg", "forward", "gcn",
                     dict(features=1433, hidden=64, layers=2, out=7), tokens=2708, graph="power_law"),
           dims=dict(features=64, hidden=32, layers=2, out=7), tokens=512),
    _model(ModelCase("gat-2layer/arxiv-like", "arxiv-like", "pyg", "forward", "gat",
                     dict(features=128, hidden=256, layers=2, out=40, heads=8), tokens=169_343, graph="power_law"),
           dims=dict(features=32, hidden=32, layers=2, out=8, heads=4), tokens=512),
]

# One namespace for every suite (a whole model's name says "-model" where an op-level case has the same shape)
CATALOG: dict[str, dict[str, AttentionCase | GraphCase | ModelCase]] = {
    real.name: {"gpu": real, "cpu": cpu} for real, cpu in _PAIRS + _MODEL_PAIRS
}


def names(suite: str | None = None) -> list[str]:
    """Every case name, or those of one suite (``"attention"``, ``"graph"`` or ``"models"``), in catalog order."""
    if suite not in (None, *SUITES):
        raise ValueError(f"suite must be one of {SUITES} or None, got {suite!r}")
    return [name for name, sizes in CATALOG.items() if suite is None or sizes["gpu"].suite == suite]


def get(name: str, size: str = "gpu") -> AttentionCase | GraphCase | ModelCase:
    """The case ``name`` at ``size`` (``"gpu"``, the real size, or ``"cpu"``, the CPU-sized variant)."""
    if name not in CATALOG:
        raise ValueError(f"unknown case {name!r}; known cases: {', '.join(CATALOG)}")
    if size not in ("gpu", "cpu"):
        raise ValueError(f"size must be 'gpu' or 'cpu', got {size!r}")
    return CATALOG[name][size]


def for_device(name: str, device: str) -> AttentionCase | GraphCase | ModelCase:
    """The size that fits ``device``: the real case on CUDA, the CPU-sized variant on the CPU."""
    return get(name, "gpu" if str(device).startswith("cuda") else "cpu")
