"""Image-text matching (ITM): is this caption about this image? A binary head over a fused representation,
trained on hard negatives mined from the contrastive similarity matrix.

Li et al. 2021, "Align before Fuse" (ALBEF), section 3.2. A fusion encoder reads an (image, text)
pair and its [CLS] output ``h`` goes through a linear head to two logits, class 1 = matched:

    logits = W h + b                     (P, 2)
    loss   = CE(logits, y),  y in {0, 1}

Negatives are *hard*: for each image ``i`` in a batch of B pairs one text ``j != i`` is drawn with
probability proportional to ``exp(sim[i, j])`` (the contrastive image-to-text logits), so texts the
contrastive model confuses with the right one are drawn most often; likewise one image for each text
from the columns of ``sim``. A batch of B positives thus yields 3B pairs: B matched, 2B unmatched.

Difference from ALBEF's code, on purpose: ALBEF takes the softmax over the whole row, adds 1e-5 and
zeroes the diagonal before ``torch.multinomial``; here the diagonal is masked *before* the softmax,
which is the same distribution over ``j != i`` up to the 1e-5 but stays defined when the positive
holds all of the softmax mass (the row's other probabilities would underflow to zero otherwise).
Sampling runs without gradient: it picks indices, it is not part of the loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["hard_negative_probabilities", "sample_hard_negatives", "build_itm_pairs", "ImageTextMatchingHead"]


def _check_similarity(similarity) -> None:
    if not isinstance(similarity, torch.Tensor) or not similarity.is_floating_point():
        raise TypeError("similarity must be a floating-point tensor of image-to-text logits")
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square (B, B) matrix, got shape {tuple(similarity.shape)}")
    if similarity.shape[0] < 2:
        raise ValueError(f"similarity needs a batch of at least 2 to hold a negative, got B = {similarity.shape[0]}")
    if not torch.isfinite(similarity).all():
        raise ValueError("similarity must be finite")


def hard_negative_probabilities(similarity: torch.Tensor) -> torch.Tensor:
    """``(B, B)``: row i is ``softmax_j(sim[i, j])`` over ``j != i``, with exactly 0 on the diagonal."""
    _check_similarity(similarity)
    positives = torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    return torch.softmax(similarity.detach().masked_fill(positives, -math.inf), dim=-1)  # (B, B)


def sample_hard_negatives(
    similarity: torch.Tensor, *, num_samples: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """For each row i, a column ``j != i`` drawn with probability :func:`hard_negative_probabilities`.

    Returns ``(B,)`` int64 column indices (one draw per row, as ALBEF), or ``(B, num_samples)``
    independent draws (with replacement) when ``num_samples`` is given.
    """
    probabilities = hard_negative_probabilities(similarity)
    if num_samples is None:
        return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)  # (B,)
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return torch.multinomial(probabilities, num_samples, replacement=True, generator=generator)  # (B, S)


def build_itm_pairs(
    similarity: torch.Tensor, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3B (image, text, label) pairs of an ALBEF ITM batch from the image-to-text similarity.

    Returns ``(image_index, text_index, labels)``, each ``(3B,)``: first the B matched pairs ``(i, i, 1)``,
    then each image with a hard negative text ``(i, j, 0)``, then each text with a hard negative image
    ``(j', i, 0)`` drawn from the column ``sim[:, i]``.
    """
    batch = similarity.shape[0] if isinstance(similarity, torch.Tensor) else 0
    negative_texts = sample_hard_negatives(similarity, generator=generator)  # (B,) a text for each image
    negative_images = sample_hard_negatives(similarity.T, generator=generator)  # (B,) an image for each text
    own = torch.arange(batch, device=similarity.device)
    image_index = torch.cat([own, own, negative_images])
    text_index = torch.cat([own, negative_texts, own])
    labels = torch.cat([torch.ones(batch, dtype=torch.long), torch.zeros(2 * batch, dtype=torch.long)])
    return image_index, text_index, labels.to(similarity.device)


class ImageTextMatchingHead(nn.Module):
    """``Linear(hidden_size, 2)`` over the fused [CLS] representation; logit 1 = matched."""

    def __init__(self, hidden_size: int):
        super().__init__()
        if not (isinstance(hidden_size, int) and hidden_size >= 1):
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        self.hidden_size = hidden_size
        self.classifier = nn.Linear(hidden_size, 2)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """``fused``: ``(P, hidden_size)`` (the [CLS] output per pair) -> ``(P, 2)`` logits."""
        if not isinstance(fused, torch.Tensor) or fused.dim() != 2 or fused.shape[1] != self.hidden_size:
            shape = tuple(fused.shape) if isinstance(fused, torch.Tensor) else type(fused).__name__
            raise ValueError(f"fused must have shape (P, hidden_size={self.hidden_size}), got {shape}")
        return self.classifier(fused)

    def loss(self, fused: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the matched (1) / unmatched (0) decision."""
        logits = self(fused)
        if not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:1] or labels.is_floating_point():
            raise ValueError(f"labels must be an integer tensor of shape (P,) = ({logits.shape[0]},)")
        if ((labels != 0) & (labels != 1)).any():
            raise ValueError("labels must be 0 (unmatched) or 1 (matched)")
        return F.cross_entropy(logits, labels.long())
