"""Search a folder of images for the ones nearest to a query image."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from upreid.data.dataset import drop_bad_records
from upreid.data.images import BadImage, read_image
from upreid.data.records import Record
from upreid.data.transforms import test_transform
from upreid.eval.extract import Embedder, embed_batch, extract_features
from upreid.eval.metrics import pairwise_distance

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def gallery_images(folder: str | Path) -> list[Path]:
    """Image files (jpg / jpeg / png, any case) under ``folder``, recursively, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"gallery folder not found: {folder}")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise FileNotFoundError(f"no jpg/jpeg/png image under gallery folder {folder}")
    return files


def _query_feature(embed: Embedder, query: Path, height: int, width: int) -> torch.Tensor:
    """(1, D) normalised feature of the query image."""
    if not query.is_file():
        raise FileNotFoundError(f"query image not found: {query}")
    try:
        img = read_image(str(query))
    except BadImage as err:
        raise ValueError(f"query image unreadable: {err}") from err
    return embed_batch(embed, test_transform(height, width)(img)[None])


def search(
    embed: Embedder,
    query: str | Path,
    gallery: str | Path,
    height: int,
    width: int,
    topk: int = 10,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> list[tuple[str, float]]:
    """The ``topk`` images of the ``gallery`` folder nearest to the ``query`` image, as
    ``(path, cosine distance)`` in ascending distance (ties by path). Unreadable gallery images
    are skipped with a warning. Distances and ranking are computed on ``device``."""
    qf = _query_feature(embed, Path(query), height, width)
    files = gallery_images(gallery)
    records, bad = drop_bad_records([Record(str(p), -1, -1) for p in files])
    if bad:
        log.warning("search: %d unreadable gallery image(s) skipped", len(bad))
    if not records:
        raise FileNotFoundError(f"no readable image under gallery folder {gallery}")
    gf, _, _ = extract_features(embed, records, height, width, batch_size, desc="search")
    dist = pairwise_distance(qf.to(device), gf.to(device), "cosine")[0]  # (G,)
    order = torch.sort(dist, stable=True).indices[:topk].cpu()
    return [(records[i].path, float(dist[i])) for i in order.tolist()]
