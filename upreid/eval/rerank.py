"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), numerically equal to the widely used NumPy implementation (torchreid,
reid-strong-baseline) but with the neighbour sets, query expansion and Jaccard distance vectorised.
"""

from __future__ import annotations

import numpy as np

_ROW_BLOCK = 1024


def _joint_distance(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> np.ndarray:
    """Squared distances over queries + gallery, each column divided by its maximum, transposed.

    q_g: (Q, G), q_q: (Q, Q), g_g: (G, G) -> float32 (N, N) with N = Q + G.
    """
    dist = np.block([[q_q, q_g], [q_g.T, g_g]])
    dist = np.power(dist, 2).astype(np.float32)
    return np.transpose(dist / np.max(dist, axis=0))


def _nearest(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest columns of each row, nearest first: (N, N) -> int64 (N, k)."""
    out = np.empty((dist.shape[0], min(k, dist.shape[1])), dtype=np.int64)
    for start in range(0, dist.shape[0], _ROW_BLOCK):
        block = np.argsort(dist[start:start + _ROW_BLOCK], axis=1, kind="stable")
        out[start:start + _ROW_BLOCK] = block[:, :out.shape[1]]
    return out


def _reciprocal(rank: np.ndarray, k: int) -> np.ndarray:
    """k-reciprocal neighbours R(i, k), padded with -1: rank (N, >k) -> int64 (N, k + 1).

    Entry m of row i is rank[i, m] when i is among the k + 1 nearest of rank[i, m], else -1.
    """
    forward = rank[:, :k + 1]  # (N, k+1)
    backward = rank[forward, :k + 1]  # (N, k+1, k+1)
    mutual = (backward == np.arange(len(rank))[:, None, None]).any(axis=2)
    return np.where(mutual, forward, -1)


def _expansion_mask(rank: np.ndarray, k1: int) -> np.ndarray:
    """Bool (N, N): R*(i, k1), i.e. R(i, k1) plus every R(c, k1/2), c in R(i, k1), that shares
    more than two thirds of its members with R(i, k1). rank: (N, >k1)."""
    num = len(rank)
    full = _reciprocal(rank, k1)  # (N, k1+1)
    half = _reciprocal(rank, int(np.around(k1 / 2.0)))  # (N, h+1)
    mask = np.zeros((num, num), dtype=bool)
    rows, cols = np.nonzero(full >= 0)
    mask[rows, full[rows, cols]] = True
    for start in range(0, num, _ROW_BLOCK):
        cand = full[start:start + _ROW_BLOCK]  # (B, k1+1)
        cand_sets = np.where(cand[..., None] >= 0, half[cand], -1)  # (B, k1+1, h+1)
        shared = (cand_sets[..., None] == cand[:, None, None, :]) & (cand_sets[..., None] >= 0)
        overlap = shared.any(axis=3).sum(axis=2)  # (B, k1+1)
        accept = overlap > 2.0 / 3 * (cand_sets >= 0).sum(axis=2)
        b, c, m = np.nonzero(accept[..., None] & (cand_sets >= 0))
        mask[start + b, cand_sets[b, c, m]] = True
    return mask


def _encode(dist: np.ndarray, rank: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """Neighbour encodings V (N, N) float32: Gaussian weights over R*(i, k1), each row summing
    to one, then averaged over the k2 nearest neighbours (local query expansion)."""
    weight = np.where(_expansion_mask(rank, k1), np.exp(-dist), np.float32(0.0))
    enc = (weight / weight.sum(axis=1, keepdims=True)).astype(np.float32)
    if k2 == 1:
        return enc
    out = np.empty_like(enc)
    for start in range(0, len(enc), _ROW_BLOCK):
        out[start:start + _ROW_BLOCK] = enc[rank[start:start + _ROW_BLOCK, :k2]].mean(axis=1)
    return out


def _jaccard(enc: np.ndarray, num_q: int) -> np.ndarray:
    """Jaccard distance 1 - s / (2 - s), s = sum_k min(V[i, k], V[j, k]), for query rows.

    enc: (N, N) -> float32 (num_q, N). Sparse: only columns where V[i] is non-zero contribute.
    """
    num = enc.shape[1]
    col, row = np.nonzero(enc.T)  # column-major non-zeros, grouped by column
    val = enc[row, col]
    count = np.bincount(col, minlength=num)
    start = np.cumsum(count) - count
    out = np.empty((num_q, num), dtype=np.float32)
    for lo in range(0, num_q, 256):
        block = min(256, num_q - lo)
        q, k = np.nonzero(enc[lo:lo + block])  # (query row, column) pairs of the block
        n = count[k]
        offset = np.repeat(start[k] - (np.cumsum(n) - n), n) + np.arange(n.sum())
        contrib = np.minimum(np.repeat(enc[lo + q, k], n), val[offset])
        flat = np.repeat(q, n) * num + row[offset]
        s = np.bincount(flat, weights=contrib, minlength=block * num).reshape(block, num)
        out[lo:lo + block] = 1.0 - s / (2.0 - s)
    return out


def re_ranking(
    q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranked distances.

    q_g_dist: (Q, G), q_q_dist: (Q, Q), g_g_dist: (G, G) -> float32 (Q, G):
    ``(1 - lambda) * d_Jaccard + lambda * d_original`` (paper Eq. 12), where d_original is the
    squared, column-max-normalised input distance. Neighbour ties break by index.
    """
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    num_q = q_g_dist.shape[0]
    dist = _joint_distance(np.asarray(q_g_dist), np.asarray(q_q_dist), np.asarray(g_g_dist))
    rank = _nearest(dist, max(k1 + 1, k2))
    jaccard = _jaccard(_encode(dist, rank, k1, k2), num_q)
    final = jaccard * (1 - lambda_value) + dist[:num_q] * lambda_value
    return final[:, num_q:].astype(np.float32)
