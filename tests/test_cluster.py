"""Tests for upreid.cluster: Jaccard distance, DBSCAN and SpCL's self-paced criterion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from upreid.cluster import dbscan, jaccard_distance, self_paced_labels


def _naive_jaccard(features: torch.Tensor, k1: int, k2: int) -> np.ndarray:
    """Literal k-reciprocal Jaccard distance with Python loops and sets."""
    f = features.double().numpy()
    n = len(f)
    dist = 2.0 - 2.0 * f @ f.T
    rank = [sorted(range(n), key=lambda j, i=i: (j != i, dist[i, j]))[:k1] for i in range(n)]

    def recip(i: int, k: int) -> set[int]:
        return {j for j in rank[i][: k + 1] if i in rank[j][: k + 1]}

    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        expanded = set(r)
        for c in r:
            r_half = recip(c, int(np.around(k1 / 2)))
            if len(r_half & r) > 2.0 / 3.0 * len(r_half):
                expanded |= r_half
        total = sum(math.exp(-dist[i, j]) for j in expanded)
        for j in expanded:
            v[i, j] = math.exp(-dist[i, j]) / total
    if k2 != 1:
        v = np.stack([np.mean([v[j] for j in rank[i][:k2]], axis=0) for i in range(n)])
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            inter = sum(min(v[i, m], v[j, m]) for m in range(n))
            union = sum(max(v[i, m], v[j, m]) for m in range(n))
            out[i, j] = max(0.0, 1.0 - inter / union)
    return out


@pytest.mark.parametrize("k1, k2", [(6, 3), (6, 1), (4, 2)])
def test_jaccard_matches_naive(k1: int, k2: int) -> None:
    torch.manual_seed(0)
    centers = torch.randn(5, 8)
    feats = F.normalize(centers.repeat(6, 1) + 0.6 * torch.randn(30, 8), dim=1)
    dist = jaccard_distance(feats, k1=k1, k2=k2)
    assert dist.dtype == np.float32 and dist.shape == (30, 30)
    np.testing.assert_allclose(dist, _naive_jaccard(feats, k1, k2), atol=1e-5)
    np.testing.assert_allclose(np.diag(dist), 0.0, atol=1e-5)


@pytest.mark.parametrize("k1, k2", [(4, 2), (6, 3)])
def test_jaccard_ties_break_by_index(k1: int, k2: int) -> None:
    # entries +-1/4: dot products are exact multiples of 1/16, so distances tie exactly
    gen = torch.Generator().manual_seed(1)
    signs = (torch.randint(0, 2, (3, 16), generator=gen) * 2 - 1).repeat(8, 1)
    flip = torch.rand(24, 16, generator=gen) < 0.1
    feats = torch.where(flip, -signs, signs).float() / 4.0
    dist = jaccard_distance(feats, k1=k1, k2=k2)
    np.testing.assert_allclose(dist, _naive_jaccard(feats, k1, k2), atol=1e-5)


def _blocks(sizes: list[int], within: float = 0.1, between: float = 0.9) -> np.ndarray:
    """Distance matrix of consecutive groups: ``within`` inside a group, ``between`` across."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    dist = np.where(group[:, None] == group[None, :], within, between)
    np.fill_diagonal(dist, 0.0)
    return dist


def _set(dist: np.ndarray, rows: range, cols: range, value: float) -> None:
    for i in rows:
        for j in cols:
            dist[i, j] = dist[j, i] = value


def test_dbscan_marks_outliers() -> None:
    dist = _blocks([4, 4, 1])
    labels = dbscan(dist, eps=0.5, min_samples=3)
    assert labels[8] == -1
    assert len(set(labels[:4])) == 1 and len(set(labels[4:8])) == 1 and labels[0] != labels[4]


def _four_groups() -> np.ndarray:
    """Groups 0-4, 5-9, 10-14 apart; 15-19 joins 10-14 only under the loose eps (0.61)."""
    dist = _blocks([5, 5, 5, 5])
    _set(dist, range(10, 15), range(15, 20), 0.61)
    return dist


def test_independence_with_given_threshold() -> None:
    labels, stats = self_paced_labels(_four_groups(), 0.6, 0.02, 4, indep_threshold=0.9)
    assert stats["clusters"] == 2 and stats["outliers"] == 10
    assert stats["indep_threshold"] == 0.9
    assert set(labels[:5]) | set(labels[5:10]) == {0, 1} and labels[0] != labels[5]
    assert sorted(labels[10:]) == list(range(2, 12))  # each unreliable point its own label


def test_independence_threshold_first_epoch_keeps_most_clusters() -> None:
    # four clusters: the sorted value at round(0.9 * 4) is the worst, so all are kept
    labels, stats = self_paced_labels(_four_groups(), 0.6, 0.02, 4)
    assert stats["indep_threshold"] == pytest.approx(0.5)
    assert stats["clusters"] == 4 and stats["outliers"] == 0
    assert sorted(set(labels)) == [0, 1, 2, 3]
    # twenty clusters; under the loose eps 0-2 absorb one stray (IoU 3/4), 3-5 two (IoU 3/5)
    dist = _blocks([3] * 20 + [1, 1, 1])
    _set(dist, range(0, 3), range(60, 61), 0.61)
    _set(dist, range(3, 6), range(61, 63), 0.61)
    labels, stats = self_paced_labels(dist, 0.6, 0.02, 3)
    assert stats["indep_threshold"] == pytest.approx(0.75)  # sorted descending, index 18
    assert stats["clusters"] == 19 and stats["outliers"] == 6
    assert len(set(labels[:3])) == 1 and labels[0] < 19
    assert sorted(labels[3:6].tolist() + labels[60:].tolist()) == list(range(19, 25))
    # the threshold is kept across epochs when passed back
    _, again = self_paced_labels(_four_groups(), 0.6, 0.02, 4, stats["indep_threshold"])
    assert again["clusters"] == 2 and again["indep_threshold"] == pytest.approx(0.75)


def test_compactness_drops_loose_members() -> None:
    # 0-3 tight core; 4-5 a pair 0.59 from the core: one normal cluster, two tight clusters
    dist = _blocks([6, 4])
    _set(dist, range(0, 4), range(4, 6), 0.59)
    labels, stats = self_paced_labels(dist, 0.6, 0.02, 2)
    assert stats["clusters"] == 2 and stats["outliers"] == 2
    assert len(set(labels[:4])) == 1 and len(set(labels[6:])) == 1
    assert sorted(labels[4:6]) == [2, 3]
    assert stats["comp_threshold"] == pytest.approx((4 / 6 + 1.0) / 2)


def test_dbscan_outliers_become_instances() -> None:
    labels, stats = self_paced_labels(_blocks([4, 4, 1, 1]), 0.5, 0.05, 3, indep_threshold=0.0)
    assert stats["clusters"] == 2 and stats["outliers"] == 2
    assert sorted(labels[8:]) == [2, 3]
    assert math.isfinite(stats["comp_threshold"])
