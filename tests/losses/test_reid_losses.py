"""Re-ID losses against slow hand-written references."""

from __future__ import annotations

import math

import pytest
import torch

from upreid.losses.reid import batch_hard_triplet, cross_entropy_ls, reid_loss
from upreid.models.heads import ReIDOutput


def _ce_ls_manual(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> float:
    total, (b, c) = 0.0, logits.shape
    for i in range(b):
        row = logits[i].tolist()
        log_z = math.log(sum(math.exp(v) for v in row))
        for j in range(c):
            q = (1 - eps) * (j == int(targets[i])) + eps / c
            total -= q * (row[j] - log_z)
    return total / b


def _triplet_manual(feats: torch.Tensor, targets: torch.Tensor, margin: float) -> float:
    total, b = 0.0, len(feats)
    for a in range(b):
        dists = [math.dist(feats[a].tolist(), feats[j].tolist()) for j in range(b)]
        d_pos = max(dists[j] for j in range(b) if targets[j] == targets[a])
        d_neg = min(dists[j] for j in range(b) if targets[j] != targets[a])
        diff = d_pos - d_neg
        total += max(diff + margin, 0.0) if margin > 0 else math.log1p(math.exp(diff))
    return total / b


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("num_classes", [2, 7])
def test_cross_entropy_ls_matches_manual(eps: float, num_classes: int) -> None:
    g = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(6, num_classes, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, num_classes, (6,), generator=g)
    got = cross_entropy_ls(logits, targets, eps)
    assert got.shape == ()
    assert got.item() == pytest.approx(_ce_ls_manual(logits, targets, eps), rel=1e-9)


@pytest.mark.parametrize("margin", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_hard_triplet_matches_manual(margin: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(8, 5, generator=g, dtype=torch.float64)
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])[torch.randperm(8, generator=g)]
    got = batch_hard_triplet(feats, targets, margin)
    assert got.item() == pytest.approx(_triplet_manual(feats, targets, margin), rel=1e-6)


def test_batch_hard_triplet_zero_when_well_separated() -> None:
    feats = torch.tensor([[0.0, 0.0], [0.0, 0.1], [10.0, 0.0], [10.0, 0.1]])
    targets = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(feats, targets, 0.3).item() == 0.0
    assert batch_hard_triplet(feats, targets, 0.0).item() < 1e-3


def test_batch_hard_triplet_gradient_finite_with_duplicates() -> None:
    feats = torch.ones(4, 3, requires_grad=True)  # all distances 0
    batch_hard_triplet(feats, torch.tensor([0, 0, 1, 1]), 0.3).backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


def test_reid_loss_averages_parts() -> None:
    g = torch.Generator().manual_seed(0)
    targets = torch.tensor([0, 0, 1, 1])
    logits = [torch.randn(4, 3, generator=g) for _ in range(3)]
    feats = [torch.randn(4, 6, generator=g) for _ in range(2)]
    loss, parts = reid_loss(ReIDOutput(logits, feats, feats[0]), targets, 0.1, 0.3)
    ce = sum(cross_entropy_ls(z, targets, 0.1) for z in logits) / 3
    tri = sum(batch_hard_triplet(f, targets, 0.3) for f in feats) / 2
    assert parts["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert parts["triplet"].item() == pytest.approx(tri.item(), rel=1e-6)
    assert loss.item() == pytest.approx((ce + tri).item(), rel=1e-6)
    loss_no_tri, parts = reid_loss(ReIDOutput(logits, [], feats[0]), targets, 0.1, 0.3)
    assert parts["triplet"].item() == 0.0
    assert loss_no_tri.item() == pytest.approx(ce.item(), rel=1e-6)
