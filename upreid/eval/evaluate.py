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
from upreid.eval.rerank import re_ranking
from upreid.params import EvalParams

log = logging.getLogger(__name__)


def _readable(records: Sequence[Record], split: str, cache: ImageCache | None
              ) -> tuple[list[Record], int]:
    """The records whose image decodes, and how many were dropped."""
    good, bad = drop_bad_records(records, cache)
    if bad:
        log.warning("%s: %d unreadable image(s) left out of the evaluation", split, len(bad))
    return good, len(bad)


def _distances(qf: torch.Tensor, gf: torch.Tensor, params: EvalParams) -> np.ndarray:
    """(Q, G) float32 distances, k-reciprocal re-ranked when ``params.rerank``."""
    q_g = pairwise_distance(qf, gf, params.metric).numpy()
    if not params.rerank:
        return q_g.astype(np.float32)
    q_q = pairwise_distance(qf, qf, params.metric).numpy()
    g_g = pairwise_distance(gf, gf, params.metric).numpy()
    return re_ranking(q_g, q_q, g_g, k1=params.rerank_k1, k2=params.rerank_k2,
                      lambda_value=params.rerank_lambda).astype(np.float32)


def evaluate_with_distances(
    embed: Embedder, data: ReIDData, params: EvalParams, height: int, width: int,
    workers: int = 0, cache: ImageCache | None = None,
) -> tuple[dict[str, float | int], np.ndarray, list[Record], list[Record]]:
    """Metrics (percent, see ``evaluate_ranking``) plus ``skipped_images``, the (Q, G) distance
    matrix and the query / gallery records it is indexed by (unreadable images removed).
    A run that evaluates every few epochs passes its ``cache`` (decoded images)."""
    query, bad_q = _readable(data.query, f"{data.name} query", cache)
    gallery, bad_g = _readable(data.gallery, f"{data.name} gallery", cache)
    if not query or not gallery:
        raise ValueError(f"{data.name}: no readable query or gallery image")
    qf, q_pids, q_cams = extract_features(embed, query, height, width, params.batch_size,
                                          params.flip, workers, f"{data.name} query", cache)
    gf, g_pids, g_cams = extract_features(embed, gallery, height, width, params.batch_size,
                                          params.flip, workers, f"{data.name} gallery", cache)
    distmat = _distances(qf, gf, params)
    metrics = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, chunk=params.chunk)
    metrics["skipped_images"] = bad_q + bad_g
    return metrics, distmat, query, gallery


def evaluate(
    embed: Embedder, data: ReIDData, params: EvalParams, height: int, width: int,
    workers: int = 0, cache: ImageCache | None = None,
) -> dict[str, float | int]:
    """The metrics of :func:`evaluate_with_distances`."""
    return evaluate_with_distances(embed, data, params, height, width, workers, cache)[0]
