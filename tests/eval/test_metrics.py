"""Tests of upreid.eval.metrics on hand-computed cases and against the per-query reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from upreid.eval.metrics import evaluate_ranking, pairwise_distance, reference_evaluate

CHUNKS = (1, 2, 7, 512)


def _both(
    dist: list[list[float]],
    q_pids: list[int],
    g_pids: list[int],
    q_cams: list[int],
    g_cams: list[int],
    **kw: int,
) -> list[dict[str, float | int]]:
    """Results of every chunk size of the vectorised evaluator, then of the reference."""
    arr = np.asarray(dist, dtype=np.float32)
    out = [
        evaluate_ranking(torch.from_numpy(arr), q_pids, g_pids, q_cams, g_cams, chunk=c, **kw)
        for c in CHUNKS
    ]
    return [*out, reference_evaluate(arr, q_pids, g_pids, q_cams, g_cams, **kw)]


def test_single_query_by_hand() -> None:
    # Query pid 1, cam 0. Gallery in index order with distances; pids 1 sit at 0.2, 0.3, 0.6.
    # Ranked: pid 2 (0.1), 1 (0.2), 1 (0.3), 3 (0.4), 4 (0.5), 1 (0.6); correct at 2, 3 and 6.
    # AP = (1/2 + 2/3 + 3/6) / 3 = 5/9; rank-1 miss, rank-5 hit; INP = 3 / 6 = 1/2.
    dist = [[0.6, 0.4, 0.2, 0.1, 0.5, 0.3]]
    g_pids = [1, 3, 1, 2, 4, 1]
    for res in _both(dist, [1], g_pids, [0], [1] * 6):
        assert res["mAP"] == pytest.approx(100 * 5 / 9)
        assert res["mINP"] == pytest.approx(50.0)
        assert (res["rank1"], res["rank5"], res["rank10"], res["rank20"]) == (0, 100, 100, 100)
        assert (res["valid_queries"], res["skipped_queries"]) == (1, 0)


def test_same_camera_same_pid_is_removed() -> None:
    # Query pid 1, cam 0. Ranked: pid 1 cam 0 (junk, removed), pid 3 cam 0 (kept: other pid),
    # pid 2 cam 1, pid 1 cam 2. Filtered list: 3, 2, 1 -> AP = 1/3, INP = 1/3, rank-1 miss.
    dist = [[0.1, 0.15, 0.2, 0.3]]
    for res in _both(dist, [1], [1, 3, 2, 1], [0], [0, 0, 1, 2]):
        assert res["rank1"] == 0.0 and res["rank5"] == 100.0
        assert res["mAP"] == pytest.approx(100 / 3)
        assert res["mINP"] == pytest.approx(100 / 3)


def test_distractors_are_plain_gallery_entries() -> None:
    # Two distractors (pid 0) ahead of the only match: AP = INP = 1/3, rank-1 miss.
    dist = [[0.05, 0.1, 0.2, 0.3]]
    for res in _both(dist, [1], [0, 0, 1, 0], [0], [1, 2, 1, 0]):
        assert res["rank1"] == 0.0 and res["rank5"] == 100.0
        assert res["mAP"] == pytest.approx(100 / 3) and res["mINP"] == pytest.approx(100 / 3)


def test_query_without_valid_match_is_skipped() -> None:
    # Query 0 (pid 5) only has a same-camera match: skipped. Query 1 (pid 1) matches at rank 1.
    dist = [[0.1, 0.2, 0.3], [0.3, 0.1, 0.2]]
    for res in _both(dist, [5, 1], [5, 1, 2], [0, 0], [0, 1, 1]):
        assert (res["valid_queries"], res["skipped_queries"]) == (1, 1)
        assert res["mAP"] == 100.0 and res["rank1"] == 100.0 and res["mINP"] == 100.0
    with pytest.raises(ValueError, match="no query"):
        evaluate_ranking([[0.1, 0.2]], [5], [5, 2], [0], [0, 1])


def test_ties_break_by_gallery_index() -> None:
    # All distances equal: the ranking is the gallery order. Gallery pids 3, 1, 1 -> correct
    # matches at 2 and 3, AP = (1/2 + 2/3) / 2 = 7/12, INP = 2/3. Reversed gallery: rank-1 hit.
    for res in _both([[0.5, 0.5, 0.5]], [1], [3, 1, 1], [0], [1, 1, 1]):
        assert res["rank1"] == 0.0
        assert res["mAP"] == pytest.approx(100 * 7 / 12) and res["mINP"] == pytest.approx(200 / 3)
    for res in _both([[0.5, 0.5, 0.5]], [1], [1, 1, 3], [0], [1, 1, 1]):
        assert res["rank1"] == 100.0 and res["mAP"] == 100.0 and res["mINP"] == 100.0


def test_max_rank_limits_cmc_keys() -> None:
    res = evaluate_ranking([[0.1, 0.2]], [1], [1, 2], [0], [1, 1], max_rank=5)
    assert "rank5" in res and "rank10" not in res


@pytest.mark.parametrize("tied_rows", [0, 10, 50])
def test_matches_reference_on_random_data(tied_rows: int) -> None:
    rng = np.random.default_rng(tied_rows)
    num_q, num_g = 50, 300
    dist = rng.random((num_q, num_g)).astype(np.float32)
    # quantised rows have many exact ties (ranked by the stable-sort path), the others none
    dist[:tied_rows] = np.round(dist[:tied_rows] * 20)
    q_pids, g_pids = rng.integers(1, 11, num_q), rng.integers(0, 11, num_g)
    q_cams, g_cams = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
    ref = reference_evaluate(dist, q_pids, g_pids, q_cams, g_cams)
    assert ref["valid_queries"] > 40
    for chunk in (1, 7, 64, 512):
        res = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, chunk=chunk)
        assert res.keys() == ref.keys()
        for key, value in ref.items():
            assert res[key] == pytest.approx(value, abs=1e-6), (chunk, key)


def test_cosine_and_euclidean_rank_alike() -> None:
    gen = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(8, 16, generator=gen), torch.randn(40, 16, generator=gen)
    cos = pairwise_distance(qf, gf, "cosine")
    euc = pairwise_distance(qf, gf, "euclidean")
    q, g = torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1)
    assert torch.allclose(euc, torch.cdist(q, g) ** 2, atol=1e-5)
    assert torch.allclose(cos, 1 - q @ g.T, atol=1e-6)
    assert torch.equal(
        torch.sort(cos, dim=1, stable=True).indices, torch.sort(euc, dim=1, stable=True).indices
    )
    labels = (torch.arange(8) % 3, torch.arange(40) % 3, torch.zeros(8), torch.ones(40))
    assert evaluate_ranking(cos, *labels) == evaluate_ranking(euc, *labels)


def test_unknown_metric_raises() -> None:
    with pytest.raises(ValueError, match="cosine"):
        pairwise_distance(torch.ones(2, 3), torch.ones(4, 3), "manhattan")
