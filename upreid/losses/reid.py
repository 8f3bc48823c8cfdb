"""Supervised re-ID losses: label-smoothed cross-entropy and batch-hard triplet.

Used by every fine-tuning method (BoT, MGN, BDB, PCB) through :func:`reid_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from upreid.models.heads import ReIDOutput
from upreid.runtime import full_precision


def cross_entropy_ls(logits: Tensor, targets: Tensor, epsilon: float) -> Tensor:
    """Label-smoothed cross-entropy (Szegedy et al. 2016, Eq. of Sec. 7; BoT Eq. 2).

    The target distribution is ``q_i = (1 - epsilon) * [i == y] + epsilon / C``;
    ``epsilon = 0`` gives the plain cross-entropy.

    Args:
        logits: ``(B, C)`` unnormalised class scores.
        targets: ``(B,)`` class indices in ``[0, C)``.
        epsilon: smoothing in ``[0, 1)``.

    Returns:
        Scalar mean loss over the batch.
    """
    return F.cross_entropy(logits, targets, label_smoothing=epsilon)


def pairwise_euclidean(x: Tensor) -> Tensor:
    """Euclidean distances ``(B, B)`` between the rows of ``x`` ``(B, D)`` (sqrt-safe at 0)."""
    sq = x.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.t()
    return d2.clamp(min=1e-12).sqrt()


def batch_hard_triplet(features: Tensor, targets: Tensor, margin: float) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017, Eq. 5) on un-normalised features.

    For each anchor ``a``: ``d_p = max_{p: y_p = y_a} ||f_a - f_p||`` and
    ``d_n = min_{n: y_n != y_a} ||f_a - f_n||``. With ``margin > 0`` the loss is
    ``mean_a relu(d_p - d_n + margin)``; with ``margin == 0`` it is the soft margin
    ``mean_a softplus(d_p - d_n)`` (Eq. 6, as in MGN).

    Args:
        features: ``(B, D)`` embeddings.
        targets: ``(B,)`` identity labels.
        margin: hinge margin, or 0 for the soft margin.

    Returns:
        Scalar mean loss over anchors.
    """
    dist = pairwise_euclidean(features)  # (B, B)
    same = targets[:, None] == targets[None, :]  # (B, B), diagonal True
    d_pos = dist.masked_fill(~same, float("-inf")).amax(dim=1)  # (B,)
    d_neg = dist.masked_fill(same, float("inf")).amin(dim=1)  # (B,); inf without negatives
    if margin > 0:
        return F.relu(d_pos - d_neg + margin).mean()
    return F.softplus(d_pos - d_neg).mean()


@full_precision
def reid_loss(
    out: ReIDOutput, targets: Tensor, label_smoothing: float, margin: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean CE over ``out.logits`` plus mean triplet over ``out.triplet`` (skipped when empty).

    Args:
        out: model output; each logits entry ``(B, C)``, each triplet entry ``(B, D)``.
        targets: ``(B,)`` identity labels.
        label_smoothing: epsilon of :func:`cross_entropy_ls`.
        margin: margin of :func:`batch_hard_triplet` (0 = soft margin).

    Returns:
        ``(loss, parts)`` with the scalar loss and detached ``{"ce", "triplet"}`` parts.
    """
    ce = torch.stack(
        [cross_entropy_ls(z.float(), targets, label_smoothing) for z in out.logits]
    ).mean()
    if out.triplet:
        tri = torch.stack(
            [batch_hard_triplet(f.float(), targets, margin) for f in out.triplet]
        ).mean()
    else:
        tri = ce.new_zeros(())
    return ce + tri, {"ce": ce.detach(), "triplet": tri.detach()}
