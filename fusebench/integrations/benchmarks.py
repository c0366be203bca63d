"""Whole models on each provider: the ``models`` suite of the case catalog (:class:`fusebench.cases.ModelCase`).

The op-level suites time one attention call or one aggregation; these cases time what a user runs: a model's
forward pass and greedy ``generate()``, with the attention (or the graph convolutions) on each provider.
`fusebench run --suite models` checks and times them with the one runner (:mod:`fusebench.runner`), which
stores their rows beside the op-level ones; this module builds the models and judges their outputs.

Providers (:data:`fusebench.providers.MODEL_PROVIDER_NAMES`): transformers cases run on ``eager``, ``sdpa``,
``flash_attention_2`` (when flash-attn is installed and on CUDA) and ``fusebench`` (the Triton attention,
:mod:`fusebench.integrations.transformers`); graph cases on ``pyg`` and ``fusebench``
(:func:`fusebench.integrations.pyg.swap_convs`, Triton kernels).

Agreement: the provider's output (the last hidden state on real tokens; for ``generate``, the logits of every
generated step against the float64 model run on the same tokens) judged by :mod:`fusebench.agreement`
against the float64 eager model (gold), with the same-dtype ``eager`` (graphs: ``pyg``) run as baseline: plain
PyTorch at the dtype. Not ``sdpa``: torch's fused kernel rounds once from float32 as ours does, so in bfloat16 it
often returns our bits exactly and cannot stand for an independent run (the policy refuses it as one).
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass, replace

import torch

from fusebench import cases as catalog
from fusebench.agreement import Verdict, check, check_baseline
from fusebench.cases import ModelCase
from fusebench.inputs import random_tensor
from fusebench.providers import MODEL_PROVIDER_NAMES

__all__ = ["model_case_names", "get_model_case", "model_providers", "PreparedModel", "prepare_model",
           "GOLD_DESCRIPTION"]

GOLD_DESCRIPTION = "float64 eager model"


def model_case_names(framework: str | None = None) -> list[str]:
    """Every model case, or those of one framework (``"transformers"`` or ``"pyg"``)."""
    if framework not in (None, *MODEL_PROVIDER_NAMES):
        raise ValueError(f"framework must be 'transformers', 'pyg' or None, got {framework!r}")
    return [n for n in catalog.names("models") if framework is None or catalog.get(n).framework == framework]


def get_model_case(name: str, size: str = "gpu") -> ModelCase:
    if name not in catalog.names("models"):
        raise ValueError(f"unknown model case {name!r}; known: {', '.join(catalog.names('models'))}")
    return catalog.get(name, size)


def model_providers(case: ModelCase) -> list[str]:
    return list(MODEL_PROVIDER_NAMES[case.framework])


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
        baseline_provider = "pyg" if self.case.framework == "pyg" else "eager"
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
    from fusebench.device import default_dtype
    from fusebench.measure import triton_gate

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    case = get_model_case(case_name, size or ("gpu" if device.startswith("cuda") else "cpu"))
    dtype = getattr(torch, dtype or default_dtype(device))
    if case.framework == "pyg" and importlib.util.find_spec("torch_geometric") is None:
        raise NotImplementedError("torch_geometric is not installed")
    interpreted, why_not = triton_gate(case, device) if provider == "fusebench" else (False, "")
    if why_not:
        raise NotImplementedError(why_not)
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
