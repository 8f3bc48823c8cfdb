"""k-reciprocal re-ranking and SpCL's Jaccard distance against a dense NumPy oracle written the
widely used way (Zhong et al.'s code as in torchreid / reid-strong-baseline; SpCL's
``compute_jaccard_distance``), with stable argsorts so that ties are defined."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from upreid.cluster import jaccard_distance
from upreid.eval import kreciprocal
from upreid.eval.metrics import pairwise_distance
from upreid.eval.rerank import re_rank_features, re_ranking

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------- the oracle


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def naive_encoding(dist: np.ndarray, rank: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """V (N, N): Gaussian weights over the expanded k-reciprocal set, then query expansion."""
    num = dist.shape[0]
    v = np.zeros_like(dist)
    for i in range(num):
        recip = _reciprocal(rank, i, k1)
        expansion = recip
        for cand in recip:
            cand_recip = _reciprocal(rank, cand, int(np.around(k1 / 2.0)))
            if len(np.intersect1d(cand_recip, recip)) > 2.0 / 3 * len(cand_recip):
                expansion = np.append(expansion, cand_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = weight / np.sum(weight)
    if k2 != 1:
        v = np.stack([np.mean(v[rank[i, :k2]], axis=0) for i in range(num)])
    return v


def naive_jaccard(v: np.ndarray, num_rows: int) -> np.ndarray:
    """(num_rows, N) Jaccard distances from an inverted index of V's non-zeros."""
    num = v.shape[0]
    inv_index = [np.where(v[:, i] != 0)[0] for i in range(num)]
    out = np.zeros((num_rows, num), dtype=v.dtype)
    for i in range(num_rows):
        temp_min = np.zeros(num, dtype=v.dtype)
        for col in np.where(v[i] != 0)[0]:
            rows = inv_index[col]
            temp_min[rows] = temp_min[rows] + np.minimum(v[i, col], v[rows, col])
        out[i] = 1 - temp_min / (2.0 - temp_min)
    return out


def naive_re_ranking(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int, lambda_value: float
) -> np.ndarray:
    """Re-ranking with row-by-row loops as in Zhong et al.'s code, argsort made stable."""
    num_q = q_g.shape[0]
    dist = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    dist = np.power(dist, 2).astype(np.float32)
    dist = np.transpose(dist / np.max(dist, axis=0))
    rank = np.argsort(dist, kind="stable")
    jaccard = naive_jaccard(naive_encoding(dist, rank, k1, k2), num_q)
    final = jaccard * (1 - lambda_value) + dist[:num_q] * lambda_value
    return final[:, num_q:]


def naive_spcl_jaccard(features: torch.Tensor, k1: int, k2: int) -> np.ndarray:
    """SpCL's variant: distances 2 - 2 cos, each point first, the k1 nearest, clipped at 0."""
    f = features.double().numpy()
    dist = 2.0 - 2.0 * f @ f.T
    order = dist.copy()
    np.fill_diagonal(order, -np.inf)
    rank = np.argsort(order, axis=1, kind="stable")[:, :k1]
    out = naive_jaccard(naive_encoding(dist, rank, k1, k2), len(f))
    out[out < 0] = 0.0
    return out


# ------------------------------------------------------------------------------------ inputs


def _distances(num_q: int, num_g: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(num_q + num_g, 8)).astype(np.float32)
    full = np.linalg.norm(feats[:, None] - feats[None], axis=2)
    return full[:num_q, num_q:], full[:num_q, :num_q], full[num_q:, num_q:]


def _clustered(num: int, seed: int, dim: int = 8) -> torch.Tensor:
    """(num, dim) unit features around a few centres."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(2, num // 6), dim, generator=gen)
    ids = torch.randint(0, len(centres), (num,), generator=gen)
    return F.normalize(centres[ids] + 0.6 * torch.randn(num, dim, generator=gen), dim=1)


def _tied(num: int, seed: int) -> torch.Tensor:
    """(num, 16) unit features with entries +-1/4: every dot product is an exact multiple of
    1/16 in any summation order, so many distances tie exactly; a few rows are duplicates."""
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (4, 16), generator=gen) * 2 - 1
    rows = signs[torch.randint(0, 4, (num,), generator=gen)]
    flip = torch.rand(num, 16, generator=gen) < 0.12
    return torch.where(flip, -rows, rows).float() / 4.0


def _matrices(qf: torch.Tensor, gf: torch.Tensor, metric: str) -> tuple[np.ndarray, ...]:
    """q_g, q_q, g_g as evaluation computed them for the dense implementation."""
    return tuple(pairwise_distance(a, b, metric).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf)))


def _boundary_ties(dist: np.ndarray, k: int) -> int:
    """Rows whose k-th and (k+1)-th smallest distances are equal."""
    part = np.sort(dist, axis=1)
    return int((part[:, k - 1] == part[:, k]).sum())


# ------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("num_q", "num_g", "k1", "k2", "lam", "seed"),
    [
        (6, 15, 5, 2, 0.3, 0),
        (6, 15, 5, 1, 0.5, 1),
        (4, 30, 20, 6, 0.3, 2),
        (10, 25, 3, 3, 0.0, 3),
    ],
)
def test_matches_naive_reference(
    num_q: int, num_g: int, k1: int, k2: int, lam: float, seed: int
) -> None:
    q_g, q_q, g_g = _distances(num_q, num_g, seed)
    got = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    want = naive_re_ranking(q_g, q_q, g_g, k1, k2, lam)
    assert got.shape == (num_q, num_g) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # re-ranking must actually change the distances
    assert not np.allclose(got, q_g**2 / np.max(q_g**2), atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("num_q", "num_g", "k1", "k2", "lam", "metric", "seed"),
    [
        (6, 15, 5, 2, 0.3, "cosine", 0),
        (6, 15, 5, 1, 0.5, "euclidean", 1),
        (4, 30, 20, 6, 0.3, "cosine", 2),
        (10, 25, 3, 3, 0.0, "euclidean", 3),
        (1, 20, 4, 2, 0.3, "cosine", 4),
        (15, 2, 4, 3, 0.3, "cosine", 5),
        (5, 12, 6, 9, 0.7, "cosine", 6),
        (3, 9, 20, 6, 1.0, "euclidean", 7),
    ],
)
def test_features_match_naive(
    num_q: int, num_g: int, k1: int, k2: int, lam: float, metric: str, seed: int, device: str
) -> None:
    feats = _clustered(num_q + num_g, seed)
    qf, gf = feats[:num_q], feats[num_q:]
    want = naive_re_ranking(*_matrices(qf, gf, metric), k1, k2, lam)
    got = re_rank_features(qf, gf, k1=k1, k2=k2, lambda_value=lam, metric=metric, device=device)
    assert got.shape == (num_q, num_g) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    dense = re_ranking(*_matrices(qf, gf, metric), k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(dense, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("num_q", "num_g", "k1", "k2", "lam", "seed"),
    [
        (8, 30, 4, 3, 0.3, 0),
        (8, 30, 6, 1, 0.3, 1),
        (3, 40, 10, 4, 0.5, 2),
        (20, 4, 5, 2, 0.3, 3),
    ],
)
def test_ties_match_naive(
    num_q: int, num_g: int, k1: int, k2: int, lam: float, seed: int, device: str
) -> None:
    feats = _tied(num_q + num_g, seed)
    qf, gf = feats[:num_q], feats[num_q:]
    q_g, q_q, g_g = _matrices(qf, gf, "cosine")
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    assert _boundary_ties(full, k1 + 1) > 0  # ties decide who is among the k1 + 1 nearest
    want = naive_re_ranking(q_g, q_q, g_g, k1, k2, lam)
    assert np.isfinite(want).all()
    got = re_rank_features(qf, gf, k1=k1, k2=k2, lambda_value=lam, device=device)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, k1, k2, lam), want, atol=1e-5, rtol=0)


def test_small_blocks_match_naive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every blocked loop runs many small blocks (neighbour rows, R* rows, pairs, Jaccard rows),
    and with no spare neighbours kept most pair distances are computed, not looked up."""
    for name, value in (
        ("BLOCK_ELEMENTS", 100),
        ("CANDIDATES", 0),
        ("PAIR_ELEMENTS", 40),
        ("EXPAND_ROWS", 3),
        ("DENSE_ELEMENTS", 50),
        ("WORK_ELEMENTS", 30),
    ):
        monkeypatch.setattr(kreciprocal, name, value)
    feats = _tied(36, 4)
    qf, gf = feats[:7], feats[7:]
    got = re_rank_features(qf, gf, k1=5, k2=3, lambda_value=0.3)
    want = naive_re_ranking(*_matrices(qf, gf, "cosine"), 5, 3, 0.3)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        jaccard_distance(feats, k1=5, k2=3), naive_spcl_jaccard(feats, 5, 3), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("self_first", [False, True])
def test_nearest_breaks_ties_by_index(self_first: bool) -> None:
    """Integer distances tie everywhere: the neighbours are the first columns of a stable
    argsort of the reference's (squared, column-max-normalised) distances, self first for SpCL."""
    gen = torch.Generator().manual_seed(0)
    full = torch.randint(1, 6, (70, 70), generator=gen).float().numpy()
    q_q, q_g, g_g = full[:9, :9], full[:9, 9:], full[9:, 9:]
    joint = np.block([[q_q, q_g], [q_g.T, g_g]])
    variant = kreciprocal.SPCL if self_first else kreciprocal.REFERENCE
    if self_first:
        dist = joint.T.copy()
        order = dist.copy()
        np.fill_diagonal(order, -np.inf)
    else:
        dist = order = np.transpose(np.power(joint, 2) / np.max(np.power(joint, 2), axis=0))
    for m in (1, 5, 12, 70):
        nb = kreciprocal.nearest(kreciprocal.MatrixSource(q_g, q_q, g_g), m, variant)
        want = np.argsort(order, axis=1, kind="stable")[:, :m]
        np.testing.assert_array_equal(nb.index, want)
        np.testing.assert_allclose(nb.dist, np.take_along_axis(dist, want, 1), rtol=1e-6)


@pytest.mark.parametrize(
    ("k1", "k2", "tied", "seed"),
    [
        (6, 3, False, 0),
        (6, 1, False, 1),
        (4, 2, False, 2),
        (20, 6, False, 3),
        (5, 8, False, 4),
        (40, 6, False, 5),
        (4, 3, True, 6),
        (7, 2, True, 7),
    ],
)
def test_spcl_jaccard_matches_naive(k1: int, k2: int, tied: bool, seed: int) -> None:
    feats = _tied(30, seed) if tied else _clustered(30, seed)
    if tied:
        assert _boundary_ties(2.0 - 2.0 * feats.numpy() @ feats.numpy().T, k1) > 0
    dist = jaccard_distance(feats, k1=k1, k2=k2)
    assert dist.dtype == np.float32 and dist.shape == (30, 30)
    np.testing.assert_allclose(dist, naive_spcl_jaccard(feats, k1, k2), atol=1e-5, rtol=0)


def test_invalid_k_raises() -> None:
    q_g, q_q, g_g = _distances(2, 4, 0)
    with pytest.raises(ValueError, match="k2"):
        re_ranking(q_g, q_q, g_g, k1=2, k2=0)
    feats = _clustered(6, 0)
    with pytest.raises(ValueError, match="k1"):
        re_rank_features(feats[:2], feats[2:], k1=0, k2=2)
    with pytest.raises(ValueError, match="metric"):
        re_rank_features(feats[:2], feats[2:], metric="manhattan")
