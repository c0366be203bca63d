"""Transfer learning: freeze a pre-trained backbone by parameter name, fine-tune the rest.

Yosinski et al. 2014, "How transferable are features in deep neural networks?": the early layers of
a trained network hold general features worth keeping, the late ones are task-specific. Fine-tuning
therefore freezes some parameters (no gradient, no update) and trains the others, often the new
head alone first, then more layers ("gradual unfreezing", Howard and Ruder 2018).

Parameters are picked by their names in ``model.named_parameters()`` (``"backbone.layer1.0.weight"``)
with shell-style globs (``"backbone.*"``, matched with :func:`fnmatch.fnmatchcase` against the whole
name) or, with ``regex=True``, regular expressions matched with :func:`re.fullmatch`. A pattern that
matches no parameter is an error: a typo would otherwise freeze nothing, silently.

What "frozen" guarantees here, and why it needs more than ``requires_grad_(False)``:

* ``freeze`` sets ``requires_grad=False`` (autograd stops computing the gradient) **and** drops any
  gradient the parameter already holds (``p.grad = None``). Optimizers skip parameters whose
  ``grad`` is None, so an optimizer built before freezing, with momentum buffers and weight decay,
  does not keep moving them; a stale zero gradient would let momentum and weight decay do exactly that.
* Normalisation layers with running statistics (BatchNorm) hold state that is not a parameter: in train
  mode every forward pass moves ``running_mean``/``running_var`` and normalises with the batch's statistics,
  so a "frozen" backbone in a model set to ``train()`` would still change. ``freeze`` therefore puts each
  such layer whose parameters are all frozen into eval mode and keeps it there through later ``model.train()``
  calls (it normalises with, and never updates, its running statistics); ``unfreeze`` releases it into the
  model's current mode. A norm layer without parameters (``affine=False``) follows its ``running_mean``'s name.
* :func:`finetune_optimizer` builds the optimizer over trainable parameters only, with weight decay off
  for biases and normalisation weights (1-D parameters), the usual AdamW recipe.
"""

from __future__ import annotations

import fnmatch
import re
import types
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["matching_parameters", "freeze", "unfreeze", "trainable_parameters", "finetune_optimizer"]


def _as_patterns(patterns) -> list[str]:
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise TypeError(f"patterns must be a non-empty string or a non-empty list of strings, got {patterns!r}")
    return patterns


def matching_parameters(model: nn.Module, patterns: str | Iterable[str], *, regex: bool = False) -> list[str]:
    """The names of ``model``'s parameters that match any of ``patterns`` (globs, or regexes when ``regex``).

    Raises ``ValueError`` naming any pattern that matches no parameter.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    patterns = _as_patterns(patterns)
    if regex:
        try:
            compiled = [re.compile(p) for p in patterns]
        except re.error as error:
            raise ValueError(f"patterns: {error.pattern!r} is not a valid regular expression ({error})") from None
        matchers = [lambda name, c=c: c.fullmatch(name) is not None for c in compiled]
    else:
        matchers = [lambda name, p=p: fnmatch.fnmatchcase(name, p) for p in patterns]
    names = [name for name, _ in model.named_parameters()]
    unmatched = [p for p, match in zip(patterns, matchers, strict=True) if not any(match(n) for n in names)]
    if unmatched:
        raise ValueError(f"patterns {unmatched} match no parameter of the model; its parameters are named like "
                         f"{names[:4]}")
    return [name for name in names if any(match(name) for match in matchers)]


def _set_trainable(model, patterns, regex, trainable: bool) -> list[str]:
    names = set(matching_parameters(model, patterns, regex=regex))
    for name, parameter in model.named_parameters():
        if name in names:
            parameter.requires_grad_(trainable)
            if not trainable:
                parameter.grad = None  # a stale gradient would let momentum / weight decay move it
    _set_norm_statistics(model, _as_patterns(patterns), regex, names, trainable)
    return sorted(names)


def _has_running_statistics(module: nn.Module) -> bool:
    return getattr(module, "track_running_stats", False) and getattr(module, "running_mean", None) is not None


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """``train()`` for a frozen norm layer: whatever mode is asked for, it stays in eval mode."""
    module.training = False
    return module


def _set_norm_statistics(model: nn.Module, patterns: list[str], regex: bool, touched: set[str],
                         trainable: bool) -> None:
    """Hold in eval mode the norm layers whose parameters are all frozen; release the others ``touched``."""
    for module_name, module in model.named_modules():
        if not _has_running_statistics(module):
            continue
        prefix = f"{module_name}." if module_name else ""
        own = [(prefix + n, p) for n, p in module.named_parameters(recurse=False)]
        if own:
            if not any(n in touched for n, _ in own):
                continue
            frozen = not any(p.requires_grad for _, p in own)
        else:  # affine=False: no parameter to follow, so the patterns decide by the statistics' name
            name = prefix + "running_mean"
            if regex:
                matched = any(re.fullmatch(p, name) for p in patterns)
            else:
                matched = any(fnmatch.fnmatchcase(name, p) for p in patterns)
            if not matched:
                continue
            frozen = not trainable
        if frozen:
            module.eval()
            module.train = types.MethodType(_stay_in_eval, module)  # model.train() recurses through this
        elif "train" in module.__dict__:
            del module.__dict__["train"]
            module.train(model.training)


def freeze(model: nn.Module, patterns: str | Iterable[str], *, regex: bool = False) -> list[str]:
    """Freeze the parameters whose names match ``patterns``; returns their names."""
    return _set_trainable(model, patterns, regex, trainable=False)


def unfreeze(model: nn.Module, patterns: str | Iterable[str], *, regex: bool = False) -> list[str]:
    """Make the parameters whose names match ``patterns`` trainable again; returns their names."""
    return _set_trainable(model, patterns, regex, trainable=True)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every parameter that requires a gradient."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def finetune_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.01,
    optimizer: type[torch.optim.Optimizer] = torch.optim.AdamW,
    **optimizer_kwargs,
) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters only, in two groups: weight-decayed matrices and
    undecayed 1-D parameters (biases, normalisation scales).

    Args:
        model: the model, with its frozen parameters already frozen.
        lr: learning rate (> 0).
        weight_decay: applied to parameters with two or more dimensions.
        optimizer: the optimizer class (AdamW by default; SGD takes ``momentum=`` in ``optimizer_kwargs``).
    """
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")
    trainable = trainable_parameters(model)
    if not trainable:
        raise ValueError("model has no trainable parameter: everything is frozen")
    decay = [p for _, p in trainable if p.dim() >= 2]
    no_decay = [p for _, p in trainable if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return optimizer([g for g in groups if g["params"]], lr=lr, **optimizer_kwargs)
