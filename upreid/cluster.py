"""SpCL pseudo-labels: Jaccard distance of k-reciprocal neighbours, DBSCAN, self-paced criterion.

Follows Ge et al., "Self-paced Contrastive Learning with Hybrid Memory" (NeurIPS 2020), Sec. 3.2,
and the k-reciprocal encoding of Zhong et al. (CVPR 2017).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.cluster import DBSCAN

from upreid.eval import kreciprocal


def _spcl_distance(sim: torch.Tensor) -> torch.Tensor:
    """SpCL's distance of unit vectors, 2 - 2 cos, from their similarities (in place)."""
    return sim.mul_(-2.0).add_(2.0)


def jaccard_distance(
    features: torch.Tensor, k1: int = 30, k2: int = 6, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Jaccard distance of k-reciprocal encodings (Zhong et al. 2017, Eq. 10-12; SpCL's variant).

    The shared sparse encoding of :mod:`upreid.eval.kreciprocal` with SpCL's settings: distances
    2 - 2 f_i . f_j, each point its own first neighbour, the k1 nearest ranked (ties by index).

    Args:
        features: (N, D) L2-normalised features.
        k1: neighbourhood size; k-reciprocal sets use k1 and the expansion uses round(k1 / 2).
        k2: local query expansion size (1 disables it).
        device: where the neighbour search runs (matrix products, top-k).

    Returns:
        (N, N) float32 distance in [0, 1], zero on the diagonal.
    """
    source = kreciprocal.FeatureSource(features, _spcl_distance, device)
    return kreciprocal.jaccard(source, k1, k2, kreciprocal.SPCL)


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
