"""SpCL pseudo-labels: Jaccard distance of k-reciprocal neighbours, DBSCAN, self-paced criterion.

Follows Ge et al., "Self-paced Contrastive Learning with Hybrid Memory" (NeurIPS 2020), Sec. 3.2,
and the k-reciprocal encoding of Zhong et al. (CVPR 2017).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN


def _rank(features: torch.Tensor, k: int, block: int = 2048) -> np.ndarray:
    """Indices of the ``k`` nearest neighbours by cosine similarity, self first: (N, k)."""
    out = []
    for start in range(0, features.shape[0], block):
        sim = features[start : start + block] @ features.t()  # (block, N)
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = float("inf")
        out.append(torch.topk(sim, k, dim=1).indices)
    return torch.cat(out).numpy()


def _pair_dist(features: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances 2 - 2 f_i . f_j for (P,) index pairs, in chunks: (P,)."""
    feats = features.float()
    out = np.empty(rows.size)
    for start in range(0, rows.size, 1 << 16):
        i = torch.from_numpy(rows[start : start + (1 << 16)])
        j = torch.from_numpy(cols[start : start + (1 << 16)])
        out[start : start + i.numel()] = (2.0 - 2.0 * (feats[i] * feats[j]).sum(1)).numpy()
    return out


def _reciprocal(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """(N, N) 0/1 matrix of k-reciprocal neighbours: j in top-(k+1) of i and i in top-(k+1) of j."""
    n = rank.shape[0]
    top = rank[:, : k + 1]  # at most rank.shape[1] columns, as in the reference
    rows = np.repeat(np.arange(n), top.shape[1])
    forward = sp.csr_matrix((np.ones(rows.size), (rows, top.ravel())), shape=(n, n))
    return forward.multiply(forward.T).tocsr()


def _encode(features: torch.Tensor, rank: np.ndarray, k1: int) -> sp.csr_matrix:
    """Sparse k-reciprocal encoding V: (N, N), each row a softmax over its expanded set."""
    r_full = _reciprocal(rank, k1)  # R(i, k1)
    r_half = _reciprocal(rank, int(np.around(k1 / 2)))  # R(c, k1/2)
    # overlap[i, c] = |R(i, k1) ∩ R(c, k1/2)| for candidates c in R(i, k1)
    overlap = (r_full @ r_half.T).multiply(r_full).tocoo()
    half_size = np.asarray(r_half.sum(axis=1)).ravel()
    rows, cols = overlap.row, overlap.col
    keep = overlap.data > 2.0 / 3.0 * half_size[cols]
    n = rank.shape[0]
    expand = sp.csr_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, n))
    support = ((r_full + expand @ r_half) > 0).tocoo()
    rows, cols = support.row, support.col
    weight = np.exp(-_pair_dist(features, rows, cols))
    weight /= np.bincount(rows, weights=weight, minlength=n)[rows]
    return sp.csr_matrix((weight, (rows, cols)), shape=(n, n))


def _query_expand(v: sp.csr_matrix, rank: np.ndarray, k2: int) -> sp.csr_matrix:
    """Local query expansion: row i becomes the mean of the rows of its k2 nearest neighbours."""
    n = rank.shape[0]
    rows = np.repeat(np.arange(n), k2)
    mean = sp.csr_matrix((np.full(rows.size, 1.0 / k2), (rows, rank[:, :k2].ravel())), (n, n))
    return (mean @ v).tocsr()


def _min_overlap(v: sp.csr_matrix) -> np.ndarray:
    """(N, N) float32 sum over columns l of min(V[i, l], V[j, l])."""
    n = v.shape[0]
    out = np.zeros((n, n), dtype=np.float32)
    v = v.tocsc()
    for col in range(n):
        lo, hi = v.indptr[col], v.indptr[col + 1]
        rows, vals = v.indices[lo:hi], v.data[lo:hi]
        out[np.ix_(rows, rows)] += np.minimum.outer(vals, vals)
    return out


def jaccard_distance(features: torch.Tensor, k1: int = 30, k2: int = 6) -> np.ndarray:
    """Jaccard distance of k-reciprocal encodings (Zhong et al. 2017, Eq. 10-12; SpCL's variant).

    Args:
        features: (N, D) L2-normalised features.
        k1: neighbourhood size; k-reciprocal sets use k1 and the expansion uses round(k1 / 2).
        k2: local query expansion size (1 disables it).

    Returns:
        (N, N) float32 distance in [0, 1], zero on the diagonal.
    """
    feats = features.detach().float().cpu()
    rank = _rank(feats, min(k1, feats.shape[0]))  # (N, k1)
    v = _encode(feats, rank, k1)
    if k2 != 1:
        v = _query_expand(v, rank, min(k2, rank.shape[1]))
    dist = _min_overlap(v)  # intersection; rows of V sum to 1, so the union is 2 - it
    union = 2.0 - dist
    dist /= union
    del union
    np.subtract(1.0, dist, out=dist)  # in place: N may be tens of thousands
    return np.clip(dist, 0.0, None, out=dist)


def dbscan(dist: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN on a precomputed (N, N) distance; returns (N,) int labels, -1 for outliers."""
    model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=-1)
    return model.fit_predict(dist).astype(np.int64)


def _instances(labels: np.ndarray) -> np.ndarray:
    """(N,) labels where each DBSCAN outlier (-1) gets its own new label after the clusters."""
    out = labels.copy()
    outliers = out == -1
    out[outliers] = out.max(initial=-1) + 1 + np.arange(outliers.sum())
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) IoU of the set of points sharing i's label under labelling a and under labelling b."""
    size_a = np.unique(a, return_inverse=True, return_counts=True)
    size_b = np.unique(b, return_inverse=True, return_counts=True)
    pairs = np.unique(np.stack([a, b]), axis=1, return_inverse=True, return_counts=True)
    inter = pairs[2][pairs[1].ravel()]
    union = size_a[2][size_a[1]] + size_b[2][size_b[1]] - inter
    return inter / union


def _relabel(labels: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, int]:
    """Clusters with at least two kept members -> 0..C-1, everything else -> C, C+1, ...

    Returns the (N,) labels and C.
    """
    kept = np.where(keep, labels, -1)
    ids, counts = np.unique(kept[kept >= 0], return_counts=True)
    clusters = ids[counts > 1]
    lookup = {int(c): i for i, c in enumerate(clusters)}
    out = np.array([lookup.get(int(c), -1) for c in kept], dtype=np.int64)
    out[out == -1] = len(clusters) + np.arange((out == -1).sum())
    return out, len(clusters)


def _indep_threshold(cluster_indep: np.ndarray, sizes: np.ndarray) -> float:
    """SpCL's first-epoch threshold: about 90% of the multi-member clusters pass it."""
    scores = np.sort(cluster_indep[sizes > 1])[::-1]  # descending IoU
    if scores.size == 0:
        return math.nan
    return float(scores[min(scores.size - 1, int(np.round(scores.size * 0.9)))])


def self_paced_labels(
    dist: np.ndarray,
    eps: float,
    eps_gap: float,
    min_samples: int,
    indep_threshold: float | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """SpCL's self-paced pseudo-labels (Ge et al. 2020, Sec. 3.2, Eq. 6-7).

    DBSCAN is run with eps - eps_gap (tight), eps (normal) and eps + eps_gap (loose); outliers
    are single-instance clusters in each. Per point, R_indep = IoU(normal cluster, loose cluster)
    and R_comp = IoU(normal cluster, tight cluster). As in SpCL's code, a cluster's independence is
    the best R_indep of its members and it is kept if that is >= ``indep_threshold``; within a
    kept cluster a point is kept if its R_comp equals the best R_comp of the cluster (the
    compactness threshold is per cluster). Everything else becomes an un-clustered instance.

    Args:
        dist: (N, N) precomputed distance, e.g. from :func:`jaccard_distance`.
        eps: DBSCAN radius of the normal clustering.
        eps_gap: offset of the tight and loose radii.
        min_samples: DBSCAN ``min_samples``.
        indep_threshold: IoU threshold from the first epoch; None (or NaN) computes it here, as
            the value that about 90% of the multi-member clusters reach.

    Returns:
        (N,) labels, clusters 0..C-1 then one label per un-clustered instance C, C+1, ...; and
        stats with "clusters", "outliers", "indep_threshold" (pass back next epoch) and
        "comp_threshold" (mean per-cluster compactness threshold, for logging only).
    """
    tight, normal, loose = (
        _instances(dbscan(dist, e, min_samples)) for e in (eps - eps_gap, eps, eps + eps_gap)
    )
    r_indep, r_comp = _iou(normal, loose), _iou(normal, tight)  # (N,) each
    ids, inverse, sizes = np.unique(normal, return_inverse=True, return_counts=True)
    cluster_indep = np.full(ids.size, -np.inf)
    np.maximum.at(cluster_indep, inverse, r_indep)
    cluster_comp = np.full(ids.size, -np.inf)
    np.maximum.at(cluster_comp, inverse, r_comp)
    if indep_threshold is None or math.isnan(indep_threshold):
        indep_threshold = _indep_threshold(cluster_indep, sizes)
    keep = (cluster_indep[inverse] >= indep_threshold) & (r_comp >= cluster_comp[inverse])
    labels, num_clusters = _relabel(normal, keep)
    comp = cluster_comp[sizes > 1]
    stats = {
        "clusters": num_clusters,
        "outliers": int((labels >= num_clusters).sum()),
        "indep_threshold": float(indep_threshold),
        "comp_threshold": float(comp.mean()) if comp.size else math.nan,
    }
    return labels, stats
