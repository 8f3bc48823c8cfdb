"""Re-ID evaluation of an embedder on a query / gallery split (Market-1501 protocol)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from upreid.data.dataset import drop_bad_records
from upreid.data.images import ImageCache
from upreid.data.records import Record, ReIDData
from upreid.eval.extract import Embedder, extract_features
from upreid.eval.metrics import evaluate_ranking, pairwise_distance
from upreid.eval.rerank import re_rank_features
from upreid.params import EvalParams

log = logging.getLogger(__name__)


def _readable(
    records: Sequence[Record], split: str, cache: ImageCache | None
) -> tuple[list[Record], int]:
    """The records whose image decodes, and how many were dropped."""
    good, bad = drop_bad_records(records, cache)
    if bad:
        log.warning("%s: %d unreadable image(s) left out of the evaluation", split, len(bad))
    return good, len(bad)


def _distances(qf: torch.Tensor, gf: torch.Tensor, params: EvalParams) -> torch.Tensor:
    """(Q, G) float32 distances on the features' device, k-reciprocal re-ranked when
    ``params.rerank``: from the features in blocks (:func:`re_rank_features`, on the same
    device), the output being the only (Q, G) array it allocates."""
    if not params.rerank:
        return pairwise_distance(qf, gf, params.metric).float()
    distmat = re_rank_features(
        qf,
        gf,
        k1=params.rerank_k1,
        k2=params.rerank_k2,
        lambda_value=params.rerank_lambda,
        metric=params.metric,
        device=qf.device,
    )
    return torch.from_numpy(distmat).to(qf.device)


def evaluate_with_distances(
    embed: Embedder,
    data: ReIDData,
    params: EvalParams,
    height: int,
    width: int,
    workers: int = 0,
    cache: ImageCache | None = None,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, float | int], np.ndarray, list[Record], list[Record]]:
    """Metrics (percent, see ``evaluate_ranking``) plus ``skipped_images``, the (Q, G) distance
    matrix (NumPy, float32) and the query / gallery records it is indexed by (unreadable images
    removed). Distances and ranking are computed on ``device`` in float32. A run that evaluates
    every few epochs passes its ``cache`` (decoded images)."""
    query, bad_q = _readable(data.query, f"{data.name} query", cache)
    gallery, bad_g = _readable(data.gallery, f"{data.name} gallery", cache)
    if not query or not gallery:
        raise ValueError(f"{data.name}: no readable query or gallery image")
    qf, q_pids, q_cams = extract_features(
        embed,
        query,
        height,
        width,
        params.batch_size,
        params.flip,
        workers,
        f"{data.name} query",
        cache,
    )
    gf, g_pids, g_cams = extract_features(
        embed,
        gallery,
        height,
        width,
        params.batch_size,
        params.flip,
        workers,
        f"{data.name} gallery",
        cache,
    )
    distmat = _distances(qf.to(device), gf.to(device), params)
    metrics = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, chunk=params.chunk)
    metrics["skipped_images"] = bad_q + bad_g
    return metrics, distmat.cpu().numpy(), query, gallery


def evaluate(
    embed: Embedder,
    data: ReIDData,
    params: EvalParams,
    height: int,
    width: int,
    workers: int = 0,
    cache: ImageCache | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float | int]:
    """The metrics of :func:`evaluate_with_distances`."""
    return evaluate_with_distances(embed, data, params, height, width, workers, cache, device)[0]
