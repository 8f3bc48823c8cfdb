"""Re-ID retrieval metrics under the Market-1501 protocol: distances, CMC, mAP and mINP.

`evaluate_ranking` is the vectorised evaluator (chunks of queries, stable torch sort, cumulative
sums); `reference_evaluate` is the widely used per-query NumPy loop (torchreid's
`eval_market1501`, fast-reid's mINP) kept as the slow reference for tests and benchmarks.
Every metric is returned in percent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | torch.Tensor | Sequence[int] | Sequence[float]

# ||q - g||^2 = 2 - 2 q.g = 2 * (1 - q.g) for unit vectors: both rank galleries identically.
DISTANCES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "cosine": lambda cos_dist: cos_dist,
    "euclidean": lambda cos_dist: 2.0 * cos_dist,
}
CMC_RANKS = (1, 5, 10, 20)


def pairwise_distance(qf: torch.Tensor, gf: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """Distances between L2-normalised query and gallery features.

    qf: (Q, D), gf: (G, D) -> (Q, G). ``cosine`` is ``1 - q.g``; ``euclidean`` is the *squared*
    euclidean distance of the normalised features, ``2 - 2 q.g``. Both are clamped at 0 (rounding
    can push ``q.g`` slightly above 1), so they give exactly the same ranking. Floating inputs keep
    their dtype; integer inputs become float32.
    """
    if metric not in DISTANCES:
        raise ValueError(f"unknown metric {metric!r}; valid names: {sorted(DISTANCES)}")
    if not qf.is_floating_point():
        qf = qf.float()
    q = F.normalize(qf, dim=1)
    g = F.normalize(gf.to(q.dtype), dim=1)
    cos_dist = (q @ g.T).neg_().add_(1.0).clamp_min_(0.0)  # (Q, G), one (Q, G) buffer
    return DISTANCES[metric](cos_dist)


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _labels(distmat: torch.Tensor, *labels: ArrayLike) -> list[torch.Tensor]:
    """Labels as int64 tensors on the device of distmat, shapes checked against it (Q, G)."""
    out = [_as_tensor(x).reshape(-1).to(device=distmat.device, dtype=torch.int64) for x in labels]
    num_q, num_g = distmat.shape
    for name, t, n in zip(
        ("q_pids", "g_pids", "q_camids", "g_camids"), out, (num_q, num_g, num_q, num_g)
    ):
        if t.numel() != n:
            raise ValueError(f"{name} has {t.numel()} entries, distmat {tuple(distmat.shape)}")
    return out


def _same_pid_entries(
    dist: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_cams: torch.Tensor,
    g_cams: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gallery entries sharing each query's pid, padded to P per row.

    dist: (B, G) -> distances (B, P) (+inf pads), gallery indices (B, P) (G pads) and junk flags
    (B, P) (same camera as the query; False pads).
    """
    num_b, num_g = dist.shape
    rows, cols = (g_pids[None, :] == q_pids[:, None]).nonzero(as_tuple=True)
    count = torch.bincount(rows, minlength=num_b)
    width = int(count.max()) if rows.numel() else 0
    slot = torch.arange(rows.numel(), device=dist.device) - (count.cumsum(0) - count)[rows]
    thr = dist.new_full((num_b, width), float("inf"))
    thr[rows, slot] = dist[rows, cols]
    gidx = torch.full((num_b, width), num_g, dtype=torch.int64, device=dist.device)
    gidx[rows, slot] = cols
    junk = torch.zeros((num_b, width), dtype=torch.bool, device=dist.device)
    junk[rows, slot] = g_cams[cols] == q_cams[rows]
    return thr, gidx, junk


def _positions(dist: torch.Tensor, thr: torch.Tensor, gidx: torch.Tensor) -> torch.Tensor:
    """0-based positions (B, P) of entries (gallery index gidx, distance thr) in each row of
    dist (B, G) sorted ascending with ties broken by gallery index.

    Rows where an entry's distance ties another gallery distance are ranked by a stable sort;
    the others by counting, for each entry, the gallery distances strictly below it.
    """
    num_b, width = thr.shape
    sthr, perm = torch.sort(thr, dim=1, stable=True)  # (B, P)
    above = torch.searchsorted(sthr, dist, right=True)  # (B, G): #entries with thr <= d
    hist = torch.zeros((num_b, width + 1), dtype=torch.int64, device=dist.device)
    ones = torch.ones((1, 1), dtype=torch.int64, device=dist.device).expand_as(above)
    hist.scatter_add_(1, above, ones)
    pos = torch.empty_like(gidx).scatter_(1, perm, hist.cumsum(1)[:, :width])
    # gallery distances equal to an entry's: more than the entries themselves means a tie
    equal = sthr.gather(1, (above - 1).clamp_min_(0)) == dist  # above == 0: sthr[0] > d
    present = torch.isfinite(sthr)
    dup = ((sthr[:, 1:] == sthr[:, :-1]) & present[:, 1:]).any(1)
    tied = (equal.sum(1) > present.sum(1)) | dup  # (B,)
    if tied.any():
        rows = tied.nonzero().squeeze(1)
        order = torch.sort(dist[rows], dim=1, stable=True).indices  # (R, G)
        rank = torch.arange(dist.shape[1], device=dist.device).expand_as(order)
        inverse = torch.empty_like(order).scatter_(1, order, rank)
        pos[rows] = inverse.gather(1, gidx[rows].clamp_max(dist.shape[1] - 1))
    return pos


def _chunk_stats(
    dist: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_cams: torch.Tensor,
    g_cams: torch.Tensor,
    ranks: Sequence[int],
) -> torch.Tensor:
    """Summed statistics of a chunk of queries.

    dist: (B, G); q_*: (B,); g_*: (G,). Returns float64 (3 + len(ranks),): sum of AP, sum of INP,
    number of valid queries, then per rank k the number of valid queries matched within top k.
    Only same-pid entries are located in the ranking; everything else is an ordinary miss.
    """
    thr, gidx, junk = _same_pid_entries(dist, q_pids, g_pids, q_cams, g_cams)
    if thr.shape[1] == 0:
        return torch.zeros(3 + len(ranks), dtype=torch.float64)
    present = torch.isfinite(thr)
    pos = torch.where(present, _positions(dist, thr, gidx), dist.shape[1])
    pos, order = torch.sort(pos, dim=1)  # same-pid entries in ranking order, pads last
    junk, hits = junk.gather(1, order), (present & ~junk).gather(1, order)
    # 1-based rank after removing junk, valid at hits: (B, P)
    rank = pos + 1 - (junk.cumsum(1) - junk.long())
    hit_count = hits.cumsum(1)  # (B, P)
    num_pos = hit_count[:, -1]
    valid = num_pos > 0
    precision = torch.where(hits, hit_count.double() / rank.double(), 0.0)
    ap = precision.sum(1)[valid] / num_pos[valid]
    first = torch.where(hits, rank, dist.shape[1] + 1).amin(1)[valid]  # (V,)
    last = torch.where(hits, rank, 0).amax(1)[valid]
    inp = num_pos[valid] / last.double()
    cmc = [(first <= k).sum() for k in ranks]
    return torch.stack([ap.sum(), inp.sum(), valid.sum().double(), *cmc]).double().cpu()


def _summary(sums: np.ndarray, num_q: int, ranks: Sequence[int]) -> dict[str, float | int]:
    """Percent metrics from summed statistics laid out as in `_chunk_stats`."""
    valid = int(sums[2])
    if valid == 0:
        raise ValueError("no query has a valid match in the gallery")
    out: dict[str, float | int] = {"mAP": 100.0 * sums[0] / valid, "mINP": 100.0 * sums[1] / valid}
    out.update({f"rank{k}": 100.0 * sums[3 + i] / valid for i, k in enumerate(ranks)})
    out.update(valid_queries=valid, skipped_queries=num_q - valid)
    return {k: (float(v) if isinstance(v, np.floating | float) else v) for k, v in out.items()}


def evaluate_ranking(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 20,
    chunk: int = 512,
) -> dict[str, float | int]:
    """mAP, mINP and CMC (percent) of a (Q, G) distance matrix, Market-1501 protocol.

    For every query, gallery entries with its pid *and* camid are removed; a query left with no
    correct match is skipped and counted in ``skipped_queries``. Distractors (pid 0) and junk are
    ordinary gallery entries. Ties in distance break by gallery index. CMC is reported as
    ``rank{k}`` for k in (1, 5, 10, 20) with k <= max_rank. AP is the mean over correct matches of
    the precision at their positions; INP (Ye et al., AGW) is the number of correct matches over
    the 1-based position of the last one. Queries are processed ``chunk`` rows at a time.
    """
    dist = _as_tensor(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (Q, G), got shape {tuple(dist.shape)}")
    if chunk < 1 or max_rank < 1:
        raise ValueError(f"chunk and max_rank must be >= 1, got {chunk} and {max_rank}")
    qp, gp, qc, gc = _labels(dist, q_pids, g_pids, q_camids, g_camids)
    ranks = [k for k in CMC_RANKS if k <= max_rank]
    sums = torch.zeros(3 + len(ranks), dtype=torch.float64)
    for start in range(0, dist.shape[0], chunk):
        rows = slice(start, start + chunk)
        sums += _chunk_stats(dist[rows], qp[rows], gp, qc[rows], gc, ranks)
    return _summary(sums.numpy(), dist.shape[0], ranks)


def reference_evaluate(
    distmat: np.ndarray,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 20,
) -> dict[str, float | int]:
    """Per-query NumPy evaluator, written the widely used way (torchreid's and fast-reid's
    ``eval_market1501``, including their per-element precision list): same protocol, keys and
    units as `evaluate_ranking`. distmat: (Q, G); full stable argsort, then a Python loop over
    queries. It is the benchmark's and the tests' reference, not a code path of the project."""
    q_pids, g_pids, q_camids, g_camids = (
        np.asarray(x) for x in (q_pids, g_pids, q_camids, g_camids)
    )
    ranks = [k for k in CMC_RANKS if k <= max_rank]
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_ap, all_inp, all_cmc = [], [], []
    for q_idx in range(distmat.shape[0]):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        last = np.max(np.where(raw_cmc == 1)[0])
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        cmc = cmc[:max_rank]
        all_cmc.append(np.pad(cmc, (0, max_rank - len(cmc)), mode="edge"))
        precision = [x / (i + 1.0) for i, x in enumerate(raw_cmc.cumsum())]
        all_ap.append((np.asarray(precision) * raw_cmc).sum() / raw_cmc.sum())
    if not all_ap:
        raise ValueError("no query has a valid match in the gallery")
    cmc_hits = np.asarray(all_cmc, dtype=np.float64).sum(0)
    sums = np.array([sum(all_ap), sum(all_inp), len(all_ap), *(cmc_hits[k - 1] for k in ranks)])
    return _summary(sums, distmat.shape[0], ranks)
