"""Contrastive objectives: CLIP's symmetric InfoNCE and SimCLR's NT-Xent.

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision",
section 2.3 and Figure 3). A batch holds B matching (image, text) pairs. With L2-normalised
embeddings ``u_i`` (images) and ``v_j`` (texts) and a learnable temperature:

    logits_ij = exp(t) * <u_i, v_j>                                   (B, B)
    loss      = ( CE(logits, diag) + CE(logits^T, diag) ) / 2

``t`` is the *log* of the logit scale, initialised to ``log(1 / 0.07)``; the paper clips the scale
so it never exceeds 100, i.e. ``t <= log(100)``. Here the clamp happens in the forward pass, so
above the bound the scale stops receiving gradient (``torch.clamp`` passes no gradient outside its
range), which is how OpenCLIP's in-place ``clamp_`` after each step behaves as well.

SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
Algorithm 1). Two augmented views ``z1, z2`` of N examples give 2N embeddings; each one's positive
is the other view of the same example, its negatives are the other 2N - 2 embeddings:

    s_ij     = cos(z_i, z_j) / tau
    l(i, j)  = -log( exp(s_ij) / sum_{k != i} exp(s_ik) )
    loss     = 1 / (2N) * sum_k [ l(2k-1, 2k) + l(2k, 2k-1) ]

(the Normalized Temperature-scaled Cross Entropy, "NT-Xent"). Both losses are means over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reference._validation import check_float_tensor, check_matrix_pair

__all__ = ["clip_logits", "clip_loss", "ClipLoss", "nt_xent_loss"]

CLIP_INIT_TEMPERATURE = 0.07  # CLIP section 2.5: "initialized to the equivalent of 0.07"
CLIP_MAX_LOGIT_SCALE = 100.0  # "clipped to prevent scaling the logits by more than 100"


def _check_embeddings(name_a: str, a, name_b: str, b) -> None:
    check_matrix_pair(name_a, a, name_b, b, columns="D", same_dtype=True)
    if a.shape[0] < 2:
        raise ValueError(f"{name_a} needs a batch of at least 2 (one positive and one negative), got {a.shape[0]}")


def clip_logits(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE,
) -> torch.Tensor:
    """``exp(min(t, log(max_logit_scale))) * cos(image_i, text_j)``: the ``(B, B)`` image-to-text logits.

    Args:
        image_embeds: ``(B, D)``, not necessarily normalised.
        text_embeds: ``(B, D)``.
        logit_scale: ``t``, the log of the scale (a scalar tensor, learnable, or a float).
        max_logit_scale: the largest scale ``exp(t)`` allowed (100 in CLIP).
    """
    _check_embeddings("image_embeds", image_embeds, "text_embeds", text_embeds)
    if not (isinstance(max_logit_scale, (int, float)) and max_logit_scale > 0):
        raise ValueError(f"max_logit_scale must be a positive number, got {max_logit_scale!r}")
    logit_scale = torch.as_tensor(logit_scale, dtype=image_embeds.dtype, device=image_embeds.device)
    if logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar (the log of the scale), got shape {tuple(logit_scale.shape)}")
    scale = logit_scale.reshape(()).clamp(max=math.log(max_logit_scale)).exp()
    image = image_embeds / image_embeds.norm(dim=-1, keepdim=True)  # (B, D)
    text = text_embeds / text_embeds.norm(dim=-1, keepdim=True)  # (B, D)
    return scale * image @ text.T  # (B, B): row i = image i against every text


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over the ``(B, B)`` logits of :func:`clip_logits`: the mean of the image-to-text
    (rows) and text-to-image (columns) cross-entropies, pair ``i`` being the positive of row i and of column i.
    Returns a scalar (as transformers' ``clip_loss`` of the similarity matrix, and the paper's Figure 3)."""
    check_float_tensor("logits_per_image", logits_per_image, "(B, B)")
    batch = logits_per_image.shape[0]
    if logits_per_image.shape[1] != batch or batch < 2:
        raise ValueError(f"logits_per_image must be square (B, B) with B >= 2 (one positive and one negative), "
                         f"got shape {tuple(logits_per_image.shape)}")
    targets = torch.arange(batch, device=logits_per_image.device)
    image_to_text = F.cross_entropy(logits_per_image, targets)
    text_to_image = F.cross_entropy(logits_per_image.T, targets)
    return (image_to_text + text_to_image) / 2


class ClipLoss(nn.Module):
    """:func:`clip_loss` of :func:`clip_logits`, with the learnable log-scale ``t`` as a parameter (``logit_scale``):
    ``forward(image_embeds, text_embeds)``."""

    def __init__(self, init_temperature: float = CLIP_INIT_TEMPERATURE,
                 max_logit_scale: float = CLIP_MAX_LOGIT_SCALE):
        super().__init__()
        if not (isinstance(init_temperature, (int, float)) and init_temperature > 0):
            raise ValueError(f"init_temperature must be a positive number, got {init_temperature!r}")
        if not (isinstance(max_logit_scale, (int, float)) and max_logit_scale > 0):
            raise ValueError(f"max_logit_scale must be a positive number, got {max_logit_scale!r}")
        self.max_logit_scale = float(max_logit_scale)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        return clip_loss(clip_logits(image_embeds, text_embeds, self.logit_scale, max_logit_scale=self.max_logit_scale))


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent over two views: ``z1[k]`` and ``z2[k]`` are the positive pair of example k.

    Args:
        z1: ``(N, D)`` projections of the first view (not necessarily normalised).
        z2: ``(N, D)`` projections of the second view.
        temperature: ``tau > 0`` (SimCLR uses 0.1 to 1).

    Returns:
        The scalar mean of the 2N per-embedding losses.
    """
    _check_embeddings("z1", z1, "z2", z2)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    n = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)  # (2N, D): rows 0..N-1 view one, N..2N-1 view two
    z = z / z.norm(dim=-1, keepdim=True)
    similarity = z @ z.T / temperature  # (2N, 2N)
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    similarity = similarity.masked_fill(self_pairs, -math.inf)  # k != i in the denominator
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # row i's other view
    return F.cross_entropy(similarity, positives)
