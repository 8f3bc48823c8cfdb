"""Ranked-list pictures: each query beside its top-k gallery matches, coloured by correctness."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from upreid.data.images import BadImage, read_image
from upreid.data.records import Record
from upreid.io import atomic_write_bytes

BORDER = 3  # px around each thumbnail
GAP = 4  # px between thumbnails
LABEL = 12  # px of text under each thumbnail
QUERY_COLOUR = (70, 110, 200)
MATCH_COLOUR = (0, 180, 0)
WRONG_COLOUR = (220, 0, 0)
BACKGROUND = (255, 255, 255)


def pick_queries(num: int, count: int) -> list[int]:
    """``count`` query indices evenly spaced over ``range(num)`` (all of them if fewer)."""
    if count >= num:
        return list(range(num))
    return [int(i) for i in np.linspace(0, num - 1, count).round()]


def ranked_gallery(
    distmat: np.ndarray, row: int, query: Record, gallery: Sequence[Record], topk: int
) -> list[int]:
    """The ``topk`` nearest gallery indices of query ``row``, junk (same pid and camera) left
    out, ties broken by gallery index."""
    order = np.argsort(distmat[row], kind="stable")
    keep = [
        int(j)
        for j in order
        if not (gallery[j].pid == query.pid and gallery[j].camid == query.camid)
    ]
    return keep[:topk]


def _thumbnail(path: str, size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    """The image resized to ``size`` (w, h) inside a ``BORDER``-px frame of ``colour``."""
    w, h = size
    tile = Image.new("RGB", (w + 2 * BORDER, h + 2 * BORDER), colour)
    try:
        img = read_image(path).resize(size, Image.Resampling.BICUBIC)
    except BadImage:
        img = Image.new("RGB", size, (128, 128, 128))
    tile.paste(img, (BORDER, BORDER))
    return tile


def cell_origin(col: int, row: int, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the frame of grid cell (col, row); column 0 is the query."""
    cell_w = size[0] + 2 * BORDER + GAP
    cell_h = size[1] + 2 * BORDER + LABEL + GAP
    extra = GAP if col > 0 else 0  # a wider gap after the query
    return GAP + col * cell_w + extra, GAP + row * cell_h


def ranked_list_png(
    distmat: np.ndarray,
    query: Sequence[Record],
    gallery: Sequence[Record],
    out: str | Path,
    num_queries: int = 8,
    topk: int = 10,
    thumb: tuple[int, int] = (64, 128),
) -> Path:
    """Write a grid, one row per query (evenly spaced, deterministic): the query in a blue frame,
    then its top-k gallery images by distance in green (same pid) or red (other pid) frames,
    with rank and distance below. distmat: (Q, G). Returns ``out``."""
    distmat = np.asarray(distmat)
    if distmat.shape != (len(query), len(gallery)):
        raise ValueError(
            f"distmat {distmat.shape} does not match {len(query)} queries "
            f"x {len(gallery)} gallery images"
        )
    rows = pick_queries(len(query), num_queries)
    width, _ = cell_origin(topk + 1, 0, thumb)
    _, height = cell_origin(0, len(rows), thumb)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r, qi in enumerate(rows):
        q = query[qi]
        cells = [(q.path, QUERY_COLOUR, f"q pid {q.pid}")]
        for rank, gj in enumerate(ranked_gallery(distmat, qi, q, gallery, topk), start=1):
            colour = MATCH_COLOUR if gallery[gj].pid == q.pid else WRONG_COLOUR
            cells.append((gallery[gj].path, colour, f"{rank}: {distmat[qi, gj]:.3f}"))
        for c, (path, colour, text) in enumerate(cells):
            x, y = cell_origin(c, r, thumb)
            canvas.paste(_thumbnail(path, thumb, colour), (x, y))
            draw.text((x, y + thumb[1] + 2 * BORDER), text, fill=(0, 0, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)
