"""Evaluation, ranked-list pictures and folder search on a tiny solid-colour dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from upreid.data.records import Record, ReIDData
from upreid.eval.evaluate import evaluate, evaluate_with_distances
from upreid.eval.extract import embed_batch, extract_features
from upreid.eval.search import search
from upreid.eval.visualize import (
    BORDER,
    GAP,
    LABEL,
    MATCH_COLOUR,
    WRONG_COLOUR,
    cell_origin,
    ranked_list_png,
)
from upreid.params import EvalParams

COLOURS = {1: (230, 20, 20), 2: (20, 200, 30), 3: (30, 40, 220), 4: (230, 220, 30)}
HEIGHT, WIDTH = 32, 16


def mean_colour(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3))  # (B, 3)


def params(**over: object) -> EvalParams:
    base = dict(
        metric="cosine",
        rerank=False,
        rerank_k1=4,
        rerank_k2=2,
        rerank_lambda=0.3,
        flip=False,
        batch_size=3,
        chunk=4,
    )
    return EvalParams(**{**base, **over})  # type: ignore[arg-type]


def write(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 32), colour).save(path, quality=95)
    return str(path)


@pytest.fixture
def data(tmp_path: Path) -> ReIDData:
    """4 identities x 2 cameras; per (pid, camera) one query and one gallery image."""
    query, gallery = [], []
    for pid, colour in COLOURS.items():
        for cam in range(2):
            name = f"{pid:04d}_c{cam + 1}s1_{{:06d}}_00.jpg"
            query.append(Record(write(tmp_path / "query" / name.format(1), colour), pid, cam))
            gallery.append(
                Record(write(tmp_path / "bounding_box_test" / name.format(2), colour), pid, cam)
            )
    return ReIDData("tiny", (), tuple(query), tuple(gallery))


def test_extract_features_normalised(data: ReIDData) -> None:
    feats, pids, camids = extract_features(mean_colour, data.query, HEIGHT, WIDTH, batch_size=3)
    assert feats.shape == (8, 3) and feats.dtype == torch.float32
    assert torch.allclose(feats.norm(dim=1), torch.ones(8), atol=1e-5)
    assert pids.tolist() == [r.pid for r in data.query]
    assert camids.tolist() == [r.camid for r in data.query]


def test_evaluate_perfect_ranking(data: ReIDData) -> None:
    metrics, distmat, query, gallery = evaluate_with_distances(
        mean_colour, data, params(), HEIGHT, WIDTH
    )
    assert metrics["mAP"] == pytest.approx(100.0)
    assert metrics["rank1"] == pytest.approx(100.0)
    assert metrics["valid_queries"] == 8 and metrics["skipped_images"] == 0
    assert distmat.shape == (8, 8) and query == list(data.query) and gallery == list(data.gallery)


def test_flip_gives_same_result(data: ReIDData) -> None:
    plain = evaluate_with_distances(mean_colour, data, params(), HEIGHT, WIDTH)
    flipped = evaluate_with_distances(mean_colour, data, params(flip=True), HEIGHT, WIDTH)
    assert flipped[0] == plain[0]
    np.testing.assert_allclose(flipped[1], plain[1], atol=1e-5)


def test_flip_averages_before_normalising() -> None:
    def left_half(x: torch.Tensor) -> torch.Tensor:  # not flip-invariant, norms differ
        assert not torch.is_grad_enabled()
        return x[..., : x.shape[3] // 2].mean(dim=(2, 3))

    x = torch.randn(4, 3, 8, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = left_half(x), left_half(x.flip(3))
    expected = F.normalize(a + b, dim=1)
    assert not torch.allclose(expected, F.normalize(F.normalize(a) + F.normalize(b)), atol=1e-3)
    torch.testing.assert_close(embed_batch(left_half, x, flip=True), expected)
    torch.testing.assert_close(embed_batch(left_half, x), F.normalize(a, dim=1))


def test_corrupt_gallery_image_skipped(data: ReIDData, tmp_path: Path) -> None:
    bad = tmp_path / "bounding_box_test" / "0001_c2s1_000003_00.jpg"
    bad.write_bytes(b"not a jpeg")
    gallery = (*data.gallery[:3], Record(str(bad), 1, 1), *data.gallery[3:])
    broken = ReIDData("tiny", (), data.query, gallery)
    metrics, distmat, _, kept = evaluate_with_distances(
        mean_colour, broken, params(), HEIGHT, WIDTH
    )
    assert metrics["skipped_images"] == 1
    assert metrics["mAP"] == pytest.approx(100.0)
    assert kept == list(data.gallery) and distmat.shape == (8, 8)


def test_rerank_path(data: ReIDData) -> None:
    metrics = evaluate(mean_colour, data, params(rerank=True, metric="euclidean"), HEIGHT, WIDTH)
    assert metrics["valid_queries"] == 8
    assert 0.0 <= metrics["mAP"] <= 100.0
    assert metrics["rank1"] == pytest.approx(100.0)


def test_ranked_list_png_colours(data: ReIDData, tmp_path: Path) -> None:
    query, gallery = list(data.query), list(data.gallery)
    distmat = np.ones((8, 8), dtype=np.float32)
    # query 0 (pid 1, cam 0): junk (gallery 0) nearest, then the correct other-camera match
    distmat[0, 0], distmat[0, 1] = 0.0, 0.1
    # query 7 (pid 4, cam 1): junk (gallery 7) nearest, then a wrong pid
    distmat[7, 7], distmat[7, 2] = 0.0, 0.1
    thumb = (20, 40)
    out = ranked_list_png(
        distmat, query, gallery, tmp_path / "fig" / "ranks.png", num_queries=2, topk=3, thumb=thumb
    )
    img = Image.open(out).convert("RGB")
    row_height = thumb[1] + 2 * BORDER + LABEL + GAP
    assert img.size == (cell_origin(4, 0, thumb)[0], GAP + 2 * row_height)
    for row, colour in ((0, MATCH_COLOUR), (1, WRONG_COLOUR)):
        x, y = cell_origin(1, row, thumb)
        assert img.getpixel((x + 1, y + 1)) == colour


def test_search_finds_same_colour(data: ReIDData, tmp_path: Path) -> None:
    folder = tmp_path / "bounding_box_test"
    (folder / "sub").mkdir()
    (folder / "sub" / "broken.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    hits = search(mean_colour, data.query[2].path, folder, HEIGHT, WIDTH, topk=3)
    assert len(hits) == 3
    assert [Path(p).name[:4] for p, _ in hits[:2]] == ["0002", "0002"]
    assert [d for _, d in hits] == sorted(d for _, d in hits)


def test_search_missing_paths(data: ReIDData, tmp_path: Path) -> None:
    folder = tmp_path / "bounding_box_test"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        search(mean_colour, tmp_path / "nope.jpg", folder, HEIGHT, WIDTH)
    with pytest.raises(FileNotFoundError, match="missing"):
        search(mean_colour, data.query[0].path, tmp_path / "missing", HEIGHT, WIDTH)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        search(mean_colour, data.query[0].path, tmp_path / "empty", HEIGHT, WIDTH)
