"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), numerically equal to the widely used NumPy implementation (torchreid,
reid-strong-baseline); both entry points run the sparse encoding of :mod:`upreid.eval.kreciprocal`.

:func:`re_rank_features` is the evaluation path: from features, in blocks, never holding an
(N, N) matrix. :func:`re_ranking` takes the three dense distance matrices as the reference does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from upreid.eval import kreciprocal
from upreid.eval.metrics import DISTANCES


def metric_distance(metric: str) -> Callable[[Tensor], Tensor]:
    """Similarities of unit vectors -> distances as ``pairwise_distance(metric)`` computes them
    (clamped ``1 - s``, doubled for ``euclidean``); works in place on its argument."""
    if metric not in DISTANCES:
        raise ValueError(f"unknown metric {metric!r}; valid names: {sorted(DISTANCES)}")
    scale = DISTANCES[metric]
    return lambda sim: scale(sim.neg_().add_(1.0).clamp_min_(0.0))


def re_rank_features(
    qf: Tensor,
    gf: Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "cosine",
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """k-reciprocal re-ranked distances from features.

    qf: (Q, D), gf: (G, D) features (normalised here, as ``pairwise_distance`` does) -> float32
    (Q, G) equal to ``re_ranking`` of the three ``pairwise_distance(.., metric)`` matrices. Matrix
    products and top-k run on ``device``; memory beyond the output is O((Q + G) * (D + k1 k2)).
    """
    kreciprocal.check_k(k1, k2)
    transform = metric_distance(metric)
    feats = torch.cat([qf.detach().to(device), gf.detach().to(device)]).float()
    feats.div_(feats.norm(dim=1, keepdim=True).clamp_min_(1e-12))  # F.normalize, in place
    source = kreciprocal.FeatureSource(feats, transform, device)
    return kreciprocal.re_rank(source, qf.shape[0], k1, k2, lambda_value)


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranked distances from dense distance matrices.

    q_g_dist: (Q, G), q_q_dist: (Q, Q), g_g_dist: (G, G) -> float32 (Q, G):
    ``(1 - lambda) * d_Jaccard + lambda * d_original`` (paper Eq. 12), where d_original is the
    squared, column-max-normalised input distance. Neighbour ties break by index.
    """
    source = kreciprocal.MatrixSource(q_g_dist, q_q_dist, g_g_dist)
    return kreciprocal.re_rank(source, source.num_q, k1, k2, lambda_value)
