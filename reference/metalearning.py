"""Meta-learning with MAML: learn an initialisation that adapts to a new task in a few gradient steps.

Finn, Abbeel and Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
Algorithm 1 (supervised version, Algorithm 2). For each task ``T_i`` with a support set ``S_i`` and a
query set ``Q_i``, the inner loop adapts the parameters by SGD on the support loss, and the outer
(meta) loss is the query loss at the adapted parameters:

    theta_i^(0)   = theta
    theta_i^(s+1) = theta_i^(s) - alpha * grad L_{S_i}(theta_i^(s))        s = 0 .. inner_steps-1
    meta_loss     = 1/n * sum_i L_{Q_i}(theta_i^(inner_steps))
    theta        <- theta - beta * d meta_loss / d theta                   (the outer optimizer)

The meta-gradient differentiates *through* the inner updates. With one inner step,

    d meta_loss / d theta = 1/n * sum_i (I - alpha * H_{S_i}(theta)) grad L_{Q_i}(theta_i')

with ``H_S`` the Hessian of the support loss (second-order MAML). First-order MAML (FOMAML,
section 5.2 of the paper) treats the inner gradients as constants, dropping the Hessian term:
``1/n * sum_i grad L_{Q_i}(theta_i')``.

Implementation: the model is called functionally (``torch.func.functional_call``) with a
dictionary of parameters, and the inner gradients come from ``torch.func.grad``. Nesting it inside
``torch.func.grad_and_value`` of the meta-loss gives the exact second-order meta-gradient; for
first order the inner gradients are detached, which stops the outer transform from differentiating
through them. Buffers (batch-norm statistics) are passed along unchanged, not adapted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value

__all__ = ["Task", "adapt", "maml_step"]

Params = dict[str, torch.Tensor]


class Task(NamedTuple):
    """One task: a support set to adapt on and a query set to evaluate the adapted model on."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


def _check(model, tasks, inner_lr, inner_steps) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not (isinstance(inner_lr, (int, float)) and inner_lr > 0):
        raise ValueError(f"inner_lr must be a positive number, got {inner_lr!r}")
    if not (isinstance(inner_steps, int) and inner_steps >= 1):
        raise ValueError(f"inner_steps must be a positive integer, got {inner_steps!r}")
    if not isinstance(tasks, Sequence) or len(tasks) == 0:
        raise ValueError("tasks must be a non-empty sequence of Task(support_x, support_y, query_x, query_y)")
    for i, task in enumerate(tasks):
        if not (isinstance(task, tuple) and len(task) == 4 and all(isinstance(t, torch.Tensor) for t in task)):
            raise TypeError(f"tasks[{i}] must be a Task(support_x, support_y, query_x, query_y) of tensors")
        for part in ("support", "query"):
            x, y = getattr(Task(*task), f"{part}_x"), getattr(Task(*task), f"{part}_y")
            if x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ValueError(f"tasks[{i}]: {part}_x and {part}_y must hold the same, non-zero number of "
                                 f"examples, got {x.shape[0]} and {y.shape[0]}")


def _fixed_tensors(model: nn.Module, params: Params) -> dict[str, torch.Tensor]:
    """The model's buffers and the parameters not being adapted, at their current values."""
    fixed = {name: p.detach() for name, p in model.named_parameters() if name not in params}
    return fixed | dict(model.named_buffers())


def adapt(
    model: nn.Module,
    params: Params,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    *,
    inner_lr: float,
    inner_steps: int = 1,
    first_order: bool = False,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
) -> Params:
    """The inner loop: ``inner_steps`` SGD steps on the support loss, starting from ``params``.

    Only the parameters named in ``params`` adapt; the model's other parameters and its buffers are
    held fixed at their current values. Differentiable with respect to ``params`` (through the inner
    gradients unless ``first_order``) under ``torch.func`` transforms.
    """
    fixed = _fixed_tensors(model, params)

    def support_loss(p: Params) -> torch.Tensor:
        return loss_fn(functional_call(model, (p, fixed), (support_x,)), support_y)

    for _ in range(inner_steps):
        gradients = grad(support_loss)(params)
        if first_order:
            gradients = {name: g.detach() for name, g in gradients.items()}
        params = {name: p - inner_lr * gradients[name] for name, p in params.items()}
    return params


def maml_step(
    model: nn.Module,
    tasks: Sequence[Task],
    *,
    inner_lr: float,
    inner_steps: int = 1,
    first_order: bool = False,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[torch.Tensor, Params]:
    """One meta-update: the meta-loss over ``tasks`` and its gradient with respect to ``model``'s parameters.

    The meta-gradient is written into each parameter's ``.grad`` (replacing what was there); when an
    ``optimizer`` over the model's parameters is given, its ``step()`` is taken as well.

    Args:
        model: the network; its current parameters are theta.
        tasks: the meta-batch, each a :class:`Task`.
        inner_lr: alpha, the inner SGD step size.
        inner_steps: inner SGD steps per task.
        first_order: FOMAML (drop the second-order terms) instead of MAML.
        loss_fn: ``loss_fn(prediction, target)``, a mean over examples (MSE by default).
        optimizer: the outer optimizer (beta), optional.

    Returns:
        ``(meta_loss, meta_gradients)``: the detached scalar meta-loss and ``{name: gradient}``.
    """
    _check(model, tasks, inner_lr, inner_steps)
    theta = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not theta:
        raise ValueError("model has no trainable parameter to meta-learn")
    fixed = _fixed_tensors(model, theta)

    def meta_loss(params: Params) -> torch.Tensor:
        losses = []
        for task in tasks:
            task = Task(*task)
            adapted = adapt(model, params, task.support_x, task.support_y, inner_lr=inner_lr,
                            inner_steps=inner_steps, first_order=first_order, loss_fn=loss_fn)
            prediction = functional_call(model, (adapted, fixed), (task.query_x,))
            losses.append(loss_fn(prediction, task.query_y))
        return torch.stack(losses).mean()

    gradients, loss = grad_and_value(meta_loss)(theta)
    for name, parameter in model.named_parameters():
        if name in gradients:
            parameter.grad = gradients[name].detach().clone()
    if optimizer is not None:
        optimizer.step()
    return loss.detach(), gradients
