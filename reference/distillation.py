"""Knowledge distillation: a student matches a frozen teacher's softened predictions.

Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network", section 2. With
student logits ``s``, teacher logits ``t`` (both ``(B, C)``), hard labels ``y`` and a temperature
``T``:

    p_t  = softmax(t / T)                 the teacher's soft targets
    p_s  = softmax(s / T)                 the student's softened prediction
    KL   = 1/B * sum_b sum_c p_t[b,c] * (log p_t[b,c] - log p_s[b,c])
    loss = alpha * T^2 * KL + (1 - alpha) * CE(s, y)

Why ``T^2``: the gradient of the soft term with respect to the student logits is
``(p_s - p_t) / (T * B)``, which shrinks like ``1/T^2`` as ``T`` grows (for logits near zero mean);
multiplying by ``T^2`` keeps the soft and hard terms on the same scale when ``T`` changes. So
``d(T^2 KL)/ds = T * (p_s - p_t) / B`` exactly.

The teacher is frozen: its logits are detached inside the loss, and :class:`DistillationModel`
keeps the teacher in eval mode with ``requires_grad=False`` on every teacher parameter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reference._validation import check_matrix_pair

__all__ = ["soft_target_kl", "distillation_loss", "DistillationModel"]


def _check_logits(student_logits, teacher_logits) -> None:
    check_matrix_pair("student_logits", student_logits, "teacher_logits", teacher_logits, columns="C",
                      same_dtype=False)


def _check_temperature(temperature) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T))``, averaged over the batch (no ``T^2`` factor).

    The teacher's logits are detached: no gradient reaches the teacher through this term.
    """
    _check_logits(student_logits, teacher_logits)
    _check_temperature(temperature)
    log_p_teacher = torch.log_softmax(teacher_logits.detach() / temperature, dim=-1)  # (B, C)
    log_p_student = torch.log_softmax(student_logits / temperature, dim=-1)  # (B, C)
    per_example = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)  # (B,)
    return per_example.mean()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Hinton's loss ``alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(s, y)``.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``; detached here.
        labels: ``(B,)`` integer class indices in ``[0, C)``.
        temperature: ``T > 0``.
        alpha: the weight of the soft term, in ``[0, 1]``.
    """
    _check_logits(student_logits, teacher_logits)
    if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int32, torch.int64):
        raise TypeError("labels must be an integer tensor of class indices (int64 or int32)")
    batch, classes = student_logits.shape
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"labels must have shape (B,) = ({batch},), got {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes}), got values in [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    soft = temperature**2 * soft_target_kl(student_logits, teacher_logits, temperature)
    hard = F.cross_entropy(student_logits, labels.long())
    return alpha * soft + (1 - alpha) * hard


class DistillationModel(nn.Module):
    """A student trained against a frozen teacher; ``forward`` returns the loss and the student's logits.

    The teacher is put in eval mode (dropout off, batch-norm running statistics) and its parameters
    stop requiring gradients at construction; ``train()`` never switches it back to training mode.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        if student is teacher:
            raise ValueError("student and teacher must be different modules")
        _check_temperature(temperature)
        if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        self.student = student
        self.teacher = teacher.eval()
        self.teacher.requires_grad_(False)
        self.temperature = temperature
        self.alpha = alpha

    def train(self, mode: bool = True) -> DistillationModel:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        student_logits = self.student(inputs)
        loss = distillation_loss(student_logits, teacher_logits, labels, temperature=self.temperature,
                                 alpha=self.alpha)
        return loss, student_logits
