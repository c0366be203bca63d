"""fusebench's Triton attention as a transformers attention implementation.

After :func:`register`, ``attn_implementation="fusebench"`` runs every attention call of a model through
``kernels.attention.attention`` (the FlashAttention-2 style Triton kernel), for any model whose attention
modules go through ``transformers.AttentionInterface`` (BERT, ViT, CLIP, GPT-2, Llama, Mistral, ...):

    from fusebench.integrations.transformers import register
    register()  # once per process
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="fusebench")

What transformers passes, and what the kernel makes of it:

* ``query`` ``(B, Hq, Nq, D)``, ``key``/``value`` ``(B, Hkv, Nk, D)``: grouped-query attention is read
  natively (query head ``h`` uses key/value head ``h // (Hq // Hkv)``), no ``repeat_kv`` copy.
* ``attention_mask``: the 4-D mask, boolean (True = attend; what :func:`register` asks transformers to
  build, through the same mask builder as ``"sdpa"``) or additive float (the ``"eager"`` kind, or a
  custom mask), broadcast over heads by strides. It already carries causality, padding and sliding
  windows, so when a mask is given the kernel applies no causal mask of its own.
* No mask and a causal module (``is_causal`` argument, else ``module.is_causal``): a causal mask in
  transformers' sense, which is **top-left** aligned (query ``i`` sees keys ``0..i``): with more keys
  than queries (prefill into an empty static cache) the keys past the queries are dropped, as the
  ``"sdpa"`` implementation does; a single query (decoding) sees every key.
* Padding reaches the kernel only inside that 4-D mask, which transformers builds in the padded frame
  (key ``j`` at its slot, query ``i`` at its cache position): its meaning is the kernel's
  ``causal_alignment="padded"``, which the call below passes explicitly although, with the mask
  carrying causality, the kernel's own causal flag is never combined with padding here.
* Padding in batched generation: left-padded rows whose keys are all masked come out as zeros, not NaN.
  (``"eager"`` gives them the mean of the values instead; neither result is ever read by a real token.)
* ``scaling`` is the softmax scale (``None``: ``1 / sqrt(D)``). Gradients flow through the kernel's
  backward, so training without attention dropout works.

``output_attentions=True`` behaves as with transformers' own fused implementations (``"sdpa"``,
``"flash_attention_2"``): the kernel still computes every output, a one-time ``UserWarning`` says that the
attention probabilities are never formed, and the returned attentions are ``None``.

What the kernel does not support raises ``NotImplementedError`` naming the feature (never a silent
fallback: a model timed or checked as "fusebench" must be running the fused kernel): attention dropout
in training mode (``model.eval()``, or set the attention dropout to 0), logit soft-capping (``softcap``),
attention sinks (``s_aux``/``sinks``), a learned position bias (``position_bias``, T5-style), float64 and
other dtypes than float16/bfloat16/float32, head dimensions above 256, non-tensor masks (flex attention's
``BlockMask``), and a sliding window with no mask to carry it. Use ``attn_implementation="sdpa"`` or
``"eager"`` for those models or calls.

Models that compute attention in their own code and ignore the interface (VisualBERT among them) accept
``attn_implementation="fusebench"`` without using it; :func:`patch_legacy_attention` swaps their
self-attention modules onto the kernel instead.
"""

from __future__ import annotations

import math
import types
import warnings

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from kernels.attention import MAX_HEAD_DIM, SUPPORTED_DTYPES, attention

__all__ = ["register", "fusebench_attention_forward", "patch_legacy_attention", "DEFAULT_NAME"]

DEFAULT_NAME = "fusebench"
_WARNED_NO_ATTENTION_WEIGHTS: list = []  # output_attentions=True: warned once per process


def register(name: str = DEFAULT_NAME) -> str:
    """Register the Triton attention under ``name`` for ``attn_implementation=name``; returns ``name``.

    Registers the attention function with ``transformers.AttentionInterface`` and, under the same name,
    transformers' boolean ``sdpa`` mask builder with ``AttentionMaskInterface`` (without it, transformers
    would hand a custom implementation no mask at all). Calling it again is harmless.
    """
    if not isinstance(name, str) or not name or name in ("eager", "sdpa") or name.startswith("flash_attention"):
        raise ValueError(f"name must be a new attention implementation name, got {name!r}")
    AttentionInterface.register(name, fusebench_attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name


def _unsupported_feature(query, key, value, attention_mask, dropout, kwargs) -> str | None:
    """The first thing in this call that the kernel cannot compute, described for an error; None if all is fine."""
    if dropout:
        return (f"attention dropout (dropout={dropout} in training mode; call model.eval() or set the model's "
                "attention dropout to 0)")
    if kwargs.get("softcap") is not None:
        return f"logit soft-capping (softcap={kwargs['softcap']})"
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        return "attention sinks (s_aux / sinks)"
    if kwargs.get("position_bias") is not None:
        return "an additive position bias (position_bias)"
    if query.dtype not in SUPPORTED_DTYPES:
        return f"dtype {query.dtype} (the kernel runs {', '.join(str(d) for d in SUPPORTED_DTYPES)})"
    widest = max(query.shape[-1], value.shape[-1])
    if widest > MAX_HEAD_DIM:
        return f"head dimension {widest} (the kernel supports up to {MAX_HEAD_DIM})"
    if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
        return f"an attention mask of type {type(attention_mask).__name__} (a 4-D tensor is needed)"
    window = kwargs.get("sliding_window")
    if window is not None and attention_mask is None and key.shape[2] >= window:
        return f"a sliding window ({window}) without an attention mask that carries it"
    return None


def fusebench_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The ``AttentionInterface`` function: ``query`` ``(B, Hq, Nq, D)`` -> ``((B, Nq, Hq, Dv), None)``.

    Args follow ``transformers.integrations.sdpa_attention.sdpa_attention_forward``; see the module
    docstring for how each is honoured and what raises.
    """
    feature = _unsupported_feature(query, key, value, attention_mask, dropout, kwargs)
    if feature is not None:
        raise NotImplementedError(f"attn_implementation 'fusebench' does not support {feature}; "
                                  "use attn_implementation='sdpa' or 'eager' for this model or call")
    if kwargs.get("output_attentions") and not _WARNED_NO_ATTENTION_WEIGHTS:
        _WARNED_NO_ATTENTION_WEIGHTS.append(True)
        warnings.warn("attn_implementation 'fusebench' never forms the attention probabilities: with "
                      "output_attentions=True the attentions are None (as with 'sdpa'); use 'eager' to get them",
                      UserWarning, stacklevel=2)
    n_q = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal) and attention_mask is None and n_q > 1
    if causal and key.shape[2] > n_q:  # top-left causal: the keys past the last query are never seen
        key, value = key[:, :, :n_q], value[:, :, :n_q]
    if isinstance(scaling, torch.Tensor):
        scaling = float(scaling)
    out = attention(query, key, value, is_causal=causal, scale=scaling, attn_mask=attention_mask,
                    layout="bhnd", causal_alignment="padded")  # (B, Hq, Nq, Dv), in query's memory order
    return out.transpose(1, 2).contiguous(), None  # (B, Nq, Hq, Dv)


# --------------------------------------------------------------------------------------------------
# Models that do not use the AttentionInterface
# --------------------------------------------------------------------------------------------------


def _legacy_self_attention_forward(self, hidden_states, attention_mask=None, output_attentions=False):
    """BERT-style self-attention (``query``/``key``/``value`` Linear layers, additive 4-D mask) on the kernel."""
    hidden_shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
    query = self.query(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, N, Dh)
    key = self.key(hidden_states).view(hidden_shape).transpose(1, 2)
    value = self.value(hidden_states).view(hidden_shape).transpose(1, 2)
    out, _ = fusebench_attention_forward(
        self, query, key, value, attention_mask, dropout=self.dropout.p if self.training else 0.0,
        scaling=1.0 / math.sqrt(self.attention_head_size), is_causal=False, output_attentions=output_attentions,
    )  # (B, N, H, Dh)
    context = out.reshape(*hidden_states.shape[:-1], self.all_head_size)  # (B, N, E)
    return (context, None) if output_attentions else (context,)  # the layer reads [1] when attentions are asked


def _legacy_self_attention_classes() -> tuple[type, ...]:
    from transformers.models.visual_bert.modeling_visual_bert import VisualBertSelfAttention

    return (VisualBertSelfAttention,)


def patch_legacy_attention(model: torch.nn.Module) -> int:
    """Run the self-attention modules of a model that ignores ``AttentionInterface`` on the kernel.

    Known modules (``VisualBertSelfAttention``) get a forward that projects queries, keys and values with
    the module's own layers and calls :func:`fusebench_attention_forward`, so the same features raise.
    Returns how many modules were patched; raises ``ValueError`` when the model has none.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    known = _legacy_self_attention_classes()
    patched = 0
    for module in model.modules():
        if isinstance(module, known):
            module.forward = types.MethodType(_legacy_self_attention_forward, module)
            patched += 1
    if patched == 0:
        names = ", ".join(cls.__name__ for cls in known)
        raise ValueError(f"{type(model).__name__} has no self-attention module of a known legacy class ({names}); "
                         "models that use transformers' AttentionInterface need attn_implementation='fusebench' "
                         "after register() instead")
    return patched
