"""k-reciprocal re-ranking against a naive per-row reference of the widely used implementation."""

from __future__ import annotations

import numpy as np
import pytest

from upreid.eval.rerank import re_ranking


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, :k + 1]
    backward = rank[forward, :k + 1]
    return forward[np.where(backward == i)[0]]


def naive_re_ranking(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int,
                     lambda_value: float) -> np.ndarray:
    """Row-by-row loops as in Zhong et al.'s code (argsort made stable so ties are defined)."""
    num_q = q_g.shape[0]
    dist = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    dist = np.power(dist, 2).astype(np.float32)
    dist = np.transpose(dist / np.max(dist, axis=0))
    num = dist.shape[0]
    rank = np.argsort(dist, kind="stable")
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
    jaccard = np.zeros((num_q, num), dtype=np.float32)
    for i in range(num_q):
        overlap = np.zeros(num, dtype=np.float32)
        for j in range(num):
            overlap[j] = np.minimum(v[i], v[j]).sum()
        jaccard[i] = 1 - overlap / (2.0 - overlap)
    final = jaccard * (1 - lambda_value) + dist[:num_q] * lambda_value
    return final[:, num_q:]


def _distances(num_q: int, num_g: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(num_q + num_g, 8)).astype(np.float32)
    full = np.linalg.norm(feats[:, None] - feats[None], axis=2)
    return full[:num_q, num_q:], full[:num_q, :num_q], full[num_q:, num_q:]


@pytest.mark.parametrize(("num_q", "num_g", "k1", "k2", "lam", "seed"), [
    (6, 15, 5, 2, 0.3, 0), (6, 15, 5, 1, 0.5, 1), (4, 30, 20, 6, 0.3, 2), (10, 25, 3, 3, 0.0, 3),
])
def test_matches_naive_reference(num_q: int, num_g: int, k1: int, k2: int, lam: float,
                                 seed: int) -> None:
    q_g, q_q, g_g = _distances(num_q, num_g, seed)
    got = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    want = naive_re_ranking(q_g, q_q, g_g, k1, k2, lam)
    assert got.shape == (num_q, num_g) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # re-ranking must actually change the distances
    assert not np.allclose(got, q_g ** 2 / np.max(q_g ** 2), atol=1e-3)


def test_invalid_k_raises() -> None:
    q_g, q_q, g_g = _distances(2, 4, 0)
    with pytest.raises(ValueError, match="k2"):
        re_ranking(q_g, q_q, g_g, k1=2, k2=0)
