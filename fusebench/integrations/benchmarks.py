"""Model-level benchmark cases: whole transformers and PyG models on each provider.

The op-level catalog (:mod:`fusebench.cases`) times one attention call or one aggregation; these cases
time what a user runs: a model's forward pass and greedy ``generate()``, with the attention (or the
graph convolutions) on each provider, and store the rows in the same results table (suite ``models``).

Cases (each with its real size, benchmarked on GPUs, and a CPU-sized variant of the same structure):

* ``bert-base-512``: BERT-base encoder (12 layers, 12 heads of 64), batch 8 x 512 tokens, one padded row.
* ``vit-b16-224``: ViT-B/16 at 224 px (197 tokens), batch 32.
* ``llama-gqa-2k``: a Llama-style decoder (16 query heads over 4 key/value heads, d 128), 2,048 tokens.
* ``llama-gqa-generate``: the same decoder, greedy ``generate()`` of 64 tokens after a left-padded batch
  of 4 prompts of up to 512 tokens (prefill plus KV-cache decoding).
* ``gcn-2layer/cora-like``, ``gat-2layer/arxiv-like``: ``torch_geometric.nn.models.GCN`` / ``GAT``
  (two layers) on the graph catalog's generators.

Providers: transformers cases run on ``eager``, ``sdpa``, ``flash_attention_2`` (when flash-attn is
installed and on CUDA) and ``fusebench`` (the Triton attention, :mod:`fusebench.integrations.transformers`);
graph cases on ``pyg`` and ``fusebench`` (:func:`fusebench.integrations.pyg.swap_convs`, Triton kernels).

Metrics per (case, provider): latency quantiles (``time``), peak memory (``memory``), and ``agreement``:
the provider's output (the last hidden state on real tokens; for ``generate``, the logits of every
generated step against the float64 model run on the same tokens) judged by :mod:`fusebench.agreement`
against the float64 eager model (gold), with the same-dtype ``sdpa`` (graphs: ``pyg``) run as baseline.
A Triton provider under ``TRITON_INTERPRET=1`` is checked, never timed.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import time
from dataclasses import dataclass, field, replace

import torch

from fusebench.agreement import Verdict, check, check_baseline
from fusebench.inputs import random_tensor, seed_for

__all__ = ["ModelCase", "MODEL_CATALOG", "model_case_names", "get_model_case", "model_providers", "PreparedModel",
           "prepare_model", "run_models", "TRANSFORMERS_PROVIDERS", "GRAPH_PROVIDERS"]

TRANSFORMERS_PROVIDERS = ["eager", "sdpa", "flash_attention_2", "fusebench"]
GRAPH_PROVIDERS = ["pyg", "fusebench"]
_CASE_SEED_BASE = 20240602
INTERPRETER_NOTE = "Triton interpreter (TRITON_INTERPRET=1): agreement only; an emulation time is not a kernel time"


@dataclass(frozen=True)
class ModelCase:
    """One model workload. ``model`` names the builder; ``dims`` its sizes; ``task`` what is timed."""

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
    def x(self) -> int:
        return self.tokens

    @property
    def seed(self) -> int:
        return seed_for("model-case", self.name, base=_CASE_SEED_BASE)

    def shape_text(self) -> str:
        d = self.dims
        if self.framework == "pyg":
            return f"{self.graph} N{self.tokens} F{d['features']} hidden {d['hidden']} x{d['layers']}"
        grouped = d.get("kv_heads", d["heads"]) != d["heads"]
        heads = f"Hq{d['heads']}/Hkv{d['kv_heads']}" if grouped else f"H{d['heads']}"
        text = f"B{self.batch} N{self.tokens} {d['layers']}x{d['hidden']} {heads}"
        return text + (f" +{self.new_tokens} tokens" if self.task == "generate" else "")


def _pair(real: ModelCase, **cpu_overrides) -> tuple[ModelCase, ModelCase]:
    return real, replace(real, size="cpu", **cpu_overrides)


_TINY_TEXT = dict(hidden=64, layers=2, heads=4, kv_heads=4, ffn=128, vocab=1000)
_TINY_GQA = dict(_TINY_TEXT, kv_heads=2)
_PAIRS = [
    _pair(ModelCase("bert-base-512", "bert-base", "transformers", "forward", "bert",
                    dict(hidden=768, layers=12, heads=12, kv_heads=12, ffn=3072, vocab=30522), batch=8, tokens=512),
          dims=_TINY_TEXT, batch=2, tokens=48),
    _pair(ModelCase("vit-b16-224", "vit-b16", "transformers", "forward", "vit",
                    dict(hidden=768, layers=12, heads=12, kv_heads=12, ffn=3072, image=224, patch=16), batch=32,
                    tokens=197),
          dims=dict(_TINY_TEXT, image=32, patch=8), batch=2, tokens=17),
    _pair(ModelCase("llama-gqa-2k", "llama-gqa", "transformers", "forward", "llama",
                    dict(hidden=2048, layers=8, heads=16, kv_heads=4, ffn=5632, vocab=32000), batch=1, tokens=2048),
          dims=_TINY_GQA, batch=1, tokens=64),
    _pair(ModelCase("llama-gqa-generate", "llama-gqa", "transformers", "generate", "llama",
                    dict(hidden=2048, layers=8, heads=16, kv_heads=4, ffn=5632, vocab=32000), batch=4, tokens=512,
                    new_tokens=64),
          dims=_TINY_GQA, batch=2, tokens=16, new_tokens=4),
    _pair(ModelCase("gcn-2layer/cora-like", "cora-like", "pyg", "forward", "gcn",
                    dict(features=1433, hidden=64, layers=2, out=7), tokens=2708, graph="power_law"),
          dims=dict(features=64, hidden=32, layers=2, out=7), tokens=512),
    _pair(ModelCase("gat-2layer/arxiv-like", "arxiv-like", "pyg", "forward", "gat",
                    dict(features=128, hidden=256, layers=2, out=40, heads=8), tokens=169_343, graph="power_law"),
          dims=dict(features=32, hidden=32, layers=2, out=8, heads=4), tokens=512),
]
MODEL_CATALOG: dict[str, dict[str, ModelCase]] = {real.name: {"gpu": real, "cpu": cpu} for real, cpu in _PAIRS}


def model_case_names(framework: str | None = None) -> list[str]:
    """Every model case, or those of one framework (``"transformers"`` or ``"pyg"``)."""
    if framework not in (None, "transformers", "pyg"):
        raise ValueError(f"framework must be 'transformers', 'pyg' or None, got {framework!r}")
    return [n for n, sizes in MODEL_CATALOG.items() if framework is None or sizes["gpu"].framework == framework]


def get_model_case(name: str, size: str = "gpu") -> ModelCase:
    if name not in MODEL_CATALOG:
        raise ValueError(f"unknown model case {name!r}; known: {', '.join(MODEL_CATALOG)}")
    if size not in ("gpu", "cpu"):
        raise ValueError(f"size must be 'gpu' or 'cpu', got {size!r}")
    return MODEL_CATALOG[name][size]


def model_providers(case: ModelCase) -> list[str]:
    return TRANSFORMERS_PROVIDERS if case.framework == "transformers" else GRAPH_PROVIDERS


# --------------------------------------------------------------------------------------------------
# Building models and inputs (deterministic from the case seed)
# --------------------------------------------------------------------------------------------------


def _transformers_model(case: ModelCase) -> torch.nn.Module:
    import transformers

    d = case.dims
    torch.manual_seed(case.seed % 2**63)
    if case.model == "bert":
        config = transformers.BertConfig(vocab_size=d["vocab"], hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                                         num_attention_heads=d["heads"], intermediate_size=d["ffn"],
                                         max_position_embeddings=max(512, case.tokens))
        return transformers.BertModel(config, add_pooling_layer=False)
    if case.model == "vit":
        config = transformers.ViTConfig(image_size=d["image"], patch_size=d["patch"], hidden_size=d["hidden"],
                                        num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                                        intermediate_size=d["ffn"])
        return transformers.ViTModel(config, add_pooling_layer=False)
    config = transformers.LlamaConfig(vocab_size=d["vocab"], hidden_size=d["hidden"], intermediate_size=d["ffn"],
                                      num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                                      num_key_value_heads=d["kv_heads"], pad_token_id=0,
                                      max_position_embeddings=case.tokens + case.new_tokens + 8)
    return transformers.LlamaForCausalLM(config) if case.task == "generate" else transformers.LlamaModel(config)


def _transformers_inputs(case: ModelCase) -> dict:
    generator = torch.Generator().manual_seed(case.seed % 2**63)
    if case.model == "vit":
        pixels = random_tensor((case.batch, 3, case.dims["image"], case.dims["image"]), seed=case.seed,
                               dtype=torch.float64)
        return {"pixel_values": pixels}
    ids = torch.randint(3, case.dims["vocab"], (case.batch, case.tokens), generator=generator)
    mask = torch.ones_like(ids)
    if case.batch > 1:  # the last row is padded to two thirds: left for decoders, right for encoders
        short = case.tokens * 2 // 3
        if case.model == "llama":
            mask[-1, : case.tokens - short] = 0
        else:
            mask[-1, short:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def _graph_model(case: ModelCase) -> torch.nn.Module:
    from torch_geometric.nn import models

    d = case.dims
    torch.manual_seed(case.seed % 2**63)
    if case.model == "gcn":
        return models.GCN(d["features"], d["hidden"], num_layers=d["layers"], out_channels=d["out"])
    return models.GAT(d["features"], d["hidden"], num_layers=d["layers"], out_channels=d["out"], heads=d["heads"])


def _graph_inputs(case: ModelCase) -> dict:
    from reference.graph_generators import make_graph

    graph = make_graph(case.graph, case.tokens, seed=case.seed)
    x = random_tensor((graph.num_nodes, case.dims["features"]), seed=case.seed + 1, dtype=torch.float64)
    return {"x": x, "edge_index": graph.edge_index}


# --------------------------------------------------------------------------------------------------
# Providers: the same model with its attention (or convs) on one implementation
# --------------------------------------------------------------------------------------------------


def _with_provider(model: torch.nn.Module, case: ModelCase, provider: str, dtype, device) -> torch.nn.Module:
    """A copy of ``model`` in ``dtype`` on ``device`` running on ``provider``; NotImplementedError if it cannot."""
    if provider not in model_providers(case):
        raise NotImplementedError(f"provider {provider!r} does not apply to {case.framework} cases "
                                  f"(choose from {model_providers(case)})")
    twin = copy.deepcopy(model).to(dtype=dtype, device=device).eval()
    if case.framework == "pyg":
        if provider == "fusebench":
            from fusebench.integrations.pyg import swap_convs

            twin = swap_convs(twin, backend="triton", fallback="raise")  # timed as fusebench: never PyG's path
        return twin
    if provider == "flash_attention_2":
        if not str(device).startswith("cuda") or importlib.util.find_spec("flash_attn") is None:
            raise NotImplementedError("flash_attention_2 needs CUDA and the flash-attn package")
        if dtype not in (torch.float16, torch.bfloat16):
            raise NotImplementedError("flash_attention_2 runs float16/bfloat16 only")
    if provider == "fusebench":
        from fusebench.integrations.transformers import register

        register()
    twin.set_attn_implementation(provider)
    return twin


def _run(model: torch.nn.Module, case: ModelCase, inputs: dict, device, dtype):
    """The task's output: last hidden state (forward) or (tokens, per-step logits) (generate)."""
    moved = {k: (v.to(dtype) if v.is_floating_point() else v).to(device) for k, v in inputs.items()}
    with torch.no_grad():
        if case.framework == "pyg":
            return model(moved["x"], moved["edge_index"])
        if case.task == "generate":
            out = model.generate(**moved, max_new_tokens=case.new_tokens, min_new_tokens=case.new_tokens,
                                 do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
            return out.sequences[:, case.tokens:], torch.stack(out.logits, dim=1)
        return model(**moved).last_hidden_state


@dataclass
class PreparedModel:
    """A model case on one provider, ready to time: ``call()`` runs the task once."""

    case: ModelCase
    provider: str
    device: str
    dtype: torch.dtype
    model: torch.nn.Module  # float64 eager, on ``device``: the gold
    candidate: torch.nn.Module
    inputs: dict
    interpreted: bool

    def call(self):
        return _run(self.candidate, self.case, self.inputs, self.device, self.dtype)

    def _real(self, out: torch.Tensor) -> torch.Tensor:
        mask = self.inputs.get("attention_mask")
        return out.flatten(0, 1) if mask is None or out.dim() < 3 else out[mask.to(out.device).bool()]

    def agreement(self) -> tuple[Verdict, str]:
        """(the verdict against the float64 eager model, a note: for generate, whether the tokens match)."""
        baseline_provider = "pyg" if self.case.framework == "pyg" else "sdpa"
        baseline_model = _with_provider(self.model, self.case, baseline_provider, self.dtype, self.device)
        candidate = self.call()
        baseline = _run(baseline_model, self.case, self.inputs, self.device, self.dtype)
        if self.case.task != "generate":
            gold = _run(self.model, self.case, self.inputs, self.device, torch.float64)
            if self.case.framework == "transformers":
                candidate, baseline, gold = self._real(candidate), self._real(baseline), self._real(gold)
            if self.provider == baseline_provider:  # the baseline itself: measured against gold, not judged
                return check_baseline(candidate, gold, name=f"{self.case.name} on {self.provider}"), ""
            return check(candidate, gold, baseline, name=f"{self.case.name} on {self.provider}"), ""
        tokens, logits = candidate
        _, baseline_logits = baseline
        # Gold prompt by prompt, unpadded (a float64 eager model that upcasts its softmax to float32 turns a
        # left-padded row NaN): the float64 greedy tokens, and the float64 logits on the candidate's own
        # tokens by teacher forcing (generate() returns float32 logits).
        ids, mask = self.inputs["input_ids"].to(self.device), self.inputs["attention_mask"].to(self.device).bool()
        golds, same = [], True
        for row in range(ids.shape[0]):
            prompt = ids[row:row + 1, mask[row]]
            gold_tokens, _ = _run(self.model, replace(self.case, batch=1, tokens=prompt.shape[1]),
                                  {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)},
                                  self.device, torch.float64)
            same = same and bool((gold_tokens[0] == tokens[row]).all())
            with torch.no_grad():
                full = torch.cat([prompt, tokens[row:row + 1, :-1]], dim=1)
                golds.append(self.model(input_ids=full).logits[0, -self.case.new_tokens:])
        note = "tokens identical to float64 eager" if same else "tokens differ from float64 eager"
        if self.provider == baseline_provider:
            return check_baseline(logits.flatten(0, 1), torch.stack(golds).flatten(0, 1),
                                  name=f"{self.case.name} logits on {self.provider}"), note
        return check(logits.flatten(0, 1), torch.stack(golds).flatten(0, 1), baseline_logits.flatten(0, 1),
                     name=f"{self.case.name} logits on {self.provider}"), note


def prepare_model(case_name: str, provider: str, *, device: str | None = None, dtype: str | None = None,
                  size: str | None = None) -> PreparedModel:
    """Build ``case_name`` (real size on CUDA, CPU-sized otherwise) on ``provider``; NotImplementedError if it
    cannot run here (asv reads that as a skip)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    case = get_model_case(case_name, size or ("gpu" if device.startswith("cuda") else "cpu"))
    dtype = getattr(torch, dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    if case.framework == "pyg" and importlib.util.find_spec("torch_geometric") is None:
        raise NotImplementedError("torch_geometric is not installed")
    from fusebench.device import interpreting_triton

    interpreted = provider == "fusebench" and interpreting_triton()  # as Triton reads it, on any device
    if provider == "fusebench" and not device.startswith("cuda") and not interpreted:
        raise NotImplementedError("Triton kernels need CUDA, or TRITON_INTERPRET=1 to emulate")
    build = _graph_model if case.framework == "pyg" else _transformers_model
    inputs = (_graph_inputs if case.framework == "pyg" else _transformers_inputs)(case)
    model = build(case).double().to(device).eval()
    if case.framework == "transformers":
        model.set_attn_implementation("eager")
    candidate = _with_provider(model, case, provider, dtype, device)
    prepared = PreparedModel(case, provider, device, dtype, model, candidate, inputs, interpreted)
    try:
        prepared.call()  # a provider that cannot run these inputs says so here
    except (NotImplementedError, ValueError, ImportError) as error:
        raise NotImplementedError(f"{provider} cannot run {case_name}: {error}") from None
    return prepared


# --------------------------------------------------------------------------------------------------
# Running and storing
# --------------------------------------------------------------------------------------------------


def _row(base: dict, metric: str, unit: str, quantiles, samples: int, **extra) -> dict:
    return {**base, "metric": metric, "unit": unit, "p20": quantiles.p20, "p50": quantiles.p50, "p80": quantiles.p80,
            "samples": samples, **extra}


def run_models(*, case_names=None, provider_names=None, device: str | None = None, dtype: str | None = None,
               ident=None, store=None) -> list[dict]:
    """Check and time every (model case, provider) that runs here; append the rows to ``store`` (when given)
    and return them. Providers that cannot run a case are left out (their reason is not a measurement).

    The same gate as :func:`fusebench.runner.run`: a result that disagrees with the gold stores its agreement
    row and no time, memory or throughput; an interpreted Triton provider is checked, never timed."""
    from fusebench.device import identity
    from fusebench.metrics import Quantiles, peak_memory, timing
    from fusebench.store import new_run_id

    ident = ident or identity(device)
    device = ident.kind
    run_id, timestamp = new_run_id(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    identity_columns = ident.as_dict()
    identity_columns["device_kind"], identity_columns["device"] = identity_columns.pop("kind"), identity_columns.pop(
        "name")
    rows = []
    for name in case_names or model_case_names():
        for provider in provider_names or model_providers(get_model_case(name)):
            try:
                prepared = prepare_model(name, provider, device=device, dtype=dtype)
            except NotImplementedError:
                continue
            verdict, note = prepared.agreement()
            case = prepared.case
            base = {"run_id": run_id, "timestamp": timestamp, "suite": case.suite, "case": case.name,
                    "size": case.size, "shape": case.shape_text(), "x": case.x, "provider": provider,
                    "mode": case.task, "dtype": str(prepared.dtype).removeprefix("torch."),
                    "agreement": verdict.ratio, "agrees": verdict.passed, "gold": "float64 eager model",
                    **identity_columns}
            if prepared.interpreted:
                note = "; ".join(filter(None, [note, INTERPRETER_NOTE]))
            if not verdict.passed:
                note = "; ".join(filter(None, [note, verdict.describe()]))
            rows.append(_row(base, "agreement", "error/allowed", Quantiles.constant(verdict.ratio), 1, note=note))
            if prepared.interpreted or not verdict.passed:
                continue
            measured = timing(prepared.call, device)
            time_ms, samples = measured.quantiles, measured.count
            base = {**base, "threads": measured.threads, "load_before": measured.load_before,
                    "load_after": measured.load_after, "flags": "oversubscribed" if measured.oversubscribed else ""}
            rows.append(_row(base, "time", "ms", time_ms, samples, note=note))
            memory, how = peak_memory(prepared.call, device)
            rows.append(_row(base, "memory", "bytes", Quantiles.constant(float(memory)), 1, note=how))
            if case.task == "generate":
                tokens = case.batch * case.new_tokens
                rate = Quantiles(*(tokens / (ms * 1e-3) if ms > 0 else math.inf
                                   for ms in (time_ms.p80, time_ms.p50, time_ms.p20)))
                rows.append(_row(base, "tokens_per_s", "tokens/s", rate, samples, note=note))
    if store is not None and rows:
        store.append(rows)
    return rows
