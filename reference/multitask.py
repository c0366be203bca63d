"""Multi-task learning: one shared encoder, one head per task, and two ways to weigh the task losses.

Hard parameter sharing (Caruana 1997): an encoder computes one representation that every task head
reads. The model here has a regression head and a classification head; the total loss is either

* fixed weights:        L = sum_i w_i * L_i
* uncertainty weights:  L = sum_i ( exp(-s_i) / 2 * L_i + s_i / 2 ),  s_i = log(sigma_i^2) learnable

The second is Kendall, Gal and Cipolla 2018, "Multi-Task Learning Using Uncertainty to Weigh Losses
for Scene Geometry and Semantics", eq. (7) for Gaussian likelihoods, written with the log-variance
``s = log sigma^2`` as the paper recommends for numerical stability: ``1 / (2 sigma^2) * L + log sigma``.
We use this form for every task (as most implementations do for classification too; the paper's
eq. (10) would drop the 1/2 in front of a cross-entropy). Its closed forms, used by the tests:

    dL/dL_i = exp(-s_i) / 2,     dL/ds_i = (1 - exp(-s_i) * L_i) / 2,     argmin_s_i = log(L_i).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultiTaskConfig", "MultiTaskModel", "weighted_loss", "UncertaintyWeightedLoss"]


@dataclass
class MultiTaskConfig:
    in_features: int = 16
    hidden_size: int = 32
    num_layers: int = 2  # shared encoder depth
    regression_targets: int = 1  # outputs of the regression head
    num_classes: int = 3  # outputs of the classification head
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("in_features", "hidden_size", "num_layers", "regression_targets"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise ValueError(f"num_classes must be an integer >= 2, got {self.num_classes!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


class MultiTaskModel(nn.Module):
    """A shared MLP encoder and two heads: ``regression`` (MSE) and ``classification`` (cross-entropy)."""

    TASKS = ("regression", "classification")

    def __init__(self, config: MultiTaskConfig):
        super().__init__()
        self.config = config
        layers, width = [], config.in_features
        for _ in range(config.num_layers):
            layers += [nn.Linear(width, config.hidden_size), nn.GELU(), nn.Dropout(config.dropout)]
            width = config.hidden_size
        self.encoder = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({
            "regression": nn.Linear(config.hidden_size, config.regression_targets),
            "classification": nn.Linear(config.hidden_size, config.num_classes),
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.config.in_features:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, in_features={self.config.in_features}), got {shape}")
        shared = self.encoder(x)  # (B, hidden)
        return {task: head(shared) for task, head in self.heads.items()}  # (B, targets) and (B, classes)

    def task_losses(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The per-task losses ``(L_regression, L_classification)`` as a ``(2,)`` tensor."""
        missing = [task for task in self.TASKS if task not in targets]
        if missing:
            raise ValueError(f"targets must have an entry for every task {self.TASKS}, missing {missing}")
        regression, labels = targets["regression"], targets["classification"]
        if regression.shape != outputs["regression"].shape:
            raise ValueError(f"targets['regression'] must have shape {tuple(outputs['regression'].shape)}, got "
                             f"{tuple(regression.shape)}")
        if labels.dtype not in (torch.int32, torch.int64) or tuple(labels.shape) != outputs["regression"].shape[:1]:
            raise ValueError("targets['classification'] must be an integer tensor of shape (B,) holding class indices")
        return torch.stack([F.mse_loss(outputs["regression"], regression),
                            F.cross_entropy(outputs["classification"], labels.long())])


def _check_losses(losses) -> None:
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1 or not losses.is_floating_point():
        raise ValueError("losses must be a 1-D floating tensor holding one loss per task")


def weighted_loss(losses: torch.Tensor, weights) -> torch.Tensor:
    """``sum_i w_i * L_i`` with fixed, non-negative weights (one per task)."""
    _check_losses(losses)
    weights = torch.as_tensor(weights, dtype=losses.dtype, device=losses.device)
    if weights.shape != losses.shape:
        raise ValueError(f"weights must have one entry per task ({losses.shape[0]}), got shape {tuple(weights.shape)}")
    if (weights < 0).any():
        raise ValueError("weights must be non-negative")
    return (weights * losses).sum()


class UncertaintyWeightedLoss(nn.Module):
    """Kendall et al. 2018: ``sum_i exp(-s_i) / 2 * L_i + s_i / 2`` with learnable ``s_i = log sigma_i^2``."""

    def __init__(self, num_tasks: int, init_log_variance: float = 0.0):
        super().__init__()
        if not (isinstance(num_tasks, int) and num_tasks >= 1):
            raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
        self.log_variances = nn.Parameter(torch.full((num_tasks,), float(init_log_variance)))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        _check_losses(losses)
        if losses.shape != self.log_variances.shape:
            raise ValueError(f"losses must have one entry per task ({self.log_variances.shape[0]}), got shape "
                             f"{tuple(losses.shape)}")
        s = self.log_variances
        return (0.5 * torch.exp(-s) * losses + 0.5 * s).sum()
