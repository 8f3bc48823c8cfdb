"""Pre-training losses against naive, loop-based references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from upreid.losses.contrastive import (
    consistency_loss,
    info_nce,
    multi_positive_nce,
    patch_positives,
    rbf_mmd2,
    select_partner,
    symmetric_partner,
)


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _naive_info_nce(q, k, queue, tau):
    total = 0.0
    for b in range(len(q)):
        pos = math.exp(float(q[b] @ k[b]) / tau)
        neg = sum(math.exp(float(q[b] @ n) / tau) for n in queue)
        total += -math.log(pos / (pos + neg))
    return total / len(q)


@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
def test_info_nce_matches_naive(tau: float) -> None:
    q, k, queue = _unit(5, 8, seed=1), _unit(5, 8, seed=2), _unit(11, 8, seed=3)
    assert info_nce(q, k, queue, tau).item() == pytest.approx(
        _naive_info_nce(q, k, queue, tau), rel=1e-5
    )


def _naive_patch(q, positives, negatives, tau):
    n, b = q.shape[:2]
    total = 0.0
    for i in range(n):
        for j in range(b):
            pos = sum(math.exp(float(q[i, j] @ p) / tau) for p in positives[i, j])
            neg = sum(math.exp(float(q[i, j] @ m) / tau) for m in negatives[i])
            total += -math.log(pos / (pos + neg))
    return total / (n * b)


@pytest.mark.parametrize("positives", [1, 2, 3])
def test_multi_positive_nce_matches_naive(positives: int) -> None:
    q = _unit(4, 3, 6, seed=4)
    pos = _unit(4, 3, positives, 6, seed=5)
    neg = _unit(4, 7, 6, seed=6)
    got = multi_positive_nce(q, pos, neg, 0.1).item()
    assert got == pytest.approx(_naive_patch(q, pos, neg, 0.1), rel=1e-5)


def test_schemes_on_a_2x2_layout() -> None:
    # patches (r, c) at 2r + c: 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1); symmetric: (r, 1 - c)
    assert symmetric_partner(4).tolist() == [1, 0, 3, 2]
    q = _unit(4, 2, 5, seed=7)
    k = _unit(4, 2, 5, seed=8)
    sym = select_partner("symmetric", q, k)
    assert sym[:, 0].tolist() == [1, 0, 3, 2] and sym[:, 1].tolist() == [1, 0, 3, 2]
    rnd = select_partner("random", q, k, torch.Generator().manual_seed(0))
    assert (rnd != torch.arange(4)[:, None]).all() and rnd.min() >= 0 and rnd.max() <= 3
    online = select_partner("online", q, k)
    for i in range(4):
        for b in range(2):
            sims = {j: float(q[i, b] @ k[j, b]) for j in range(4) if j != i}
            assert online[i, b].item() == min(sims, key=sims.get)
    pos = patch_positives(k, sym)
    assert torch.equal(pos[0, :, 0], k[0]) and torch.equal(pos[0, :, 1], k[1])
    assert torch.equal(pos[2, :, 1], k[3])
    with pytest.raises(ValueError, match="unknown positive scheme"):
        select_partner("nearest", q, k)


def test_random_scheme_covers_every_other_patch() -> None:
    q = _unit(4, 200, 5)
    picks = select_partner("random", q, q, torch.Generator().manual_seed(1))
    assert set(picks[0].tolist()) == {1, 2, 3}


def _naive_mmd2(x, y, scales=(0.25, 0.5, 1.0, 2.0, 4.0)):
    z = torch.cat([x, y]).double()
    d2 = [[float(((a - b) ** 2).sum()) for b in z] for a in z]
    off = sorted(d2[i][j] for i in range(len(z)) for j in range(len(z)) if i != j)
    h = torch.tensor(off).median().item()

    def k(i, j):
        return sum(math.exp(-d2[i][j] / (s * h)) for s in scales)

    m, n = len(x), len(y)
    kxx = sum(k(i, j) for i in range(m) for j in range(m)) / m**2
    kyy = sum(k(m + i, m + j) for i in range(n) for j in range(n)) / n**2
    kxy = sum(k(i, m + j) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_mmd_matches_naive_and_is_zero_for_equal_samples() -> None:
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(9))
    y = torch.randn(6, 4, generator=torch.Generator().manual_seed(10)) + 0.5
    assert rbf_mmd2(x, y).item() == pytest.approx(_naive_mmd2(x, y), rel=1e-4)
    assert abs(rbf_mmd2(x, x.clone()).item()) < 1e-6


def test_consistency_gradient_reaches_q_only() -> None:
    q0 = _unit(6, 8, seed=11).requires_grad_(True)
    k0 = _unit(6, 8, seed=12)
    o = _unit(6, 8, seed=13).requires_grad_(True)
    loss = consistency_loss(q0, k0, o, 0.1)
    loss.backward()
    assert q0.grad is not None and q0.grad.abs().sum() > 0
    assert o.grad is None
    p_a = F.softmax(q0 @ k0.t() / 0.1, dim=1)
    p_o = F.softmax(o @ o.t() / 0.1, dim=1)
    assert loss.item() == pytest.approx(_naive_mmd2(p_a.detach(), p_o.detach()), rel=1e-4)
