"""Torch datasets over records; bad images are skipped (with a warning and a count)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from upreid.data.images import BadImage, ImageCache, reader
from upreid.data.records import Record

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """``(transform(image), pid, camid, index)`` per record.

    A record whose image cannot be decoded is replaced by the next good one and counted in
    ``self.bad`` (per worker process), so one bad file never stops an epoch. Use
    :func:`drop_bad_records` before training to remove them once, up front. Images come from
    ``cache`` when one is given (see :class:`ImageCache`).
    """

    def __init__(
        self,
        records: Sequence[Record],
        transform: Callable[[Any], Any],
        cache: ImageCache | None = None,
    ) -> None:
        if not records:
            raise ValueError("ImageDataset: no records")
        self.records = list(records)
        self.transform = transform
        self.read = reader(cache)
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, int, int, int]:
        for offset in range(len(self.records)):
            i = (index + offset) % len(self.records)
            rec = self.records[i]
            try:
                img = self.read(rec.path)
            except BadImage as err:
                if i not in self.bad:
                    self.bad.add(i)
                    log.warning("skipping unreadable image (%d so far): %s", len(self.bad), err)
                continue
            return self.transform(img), rec.pid, rec.camid, i
        raise RuntimeError("ImageDataset: every image is unreadable")


def drop_bad_records(
    records: Sequence[Record], cache: ImageCache | None = None
) -> tuple[list[Record], list[str]]:
    """Decode every image once (into ``cache`` when given); return the good records and the
    messages of the bad ones."""
    read = reader(cache)
    good, bad = [], []
    for rec in records:
        try:
            read(rec.path)
        except BadImage as err:
            bad.append(str(err))
            continue
        good.append(rec)
    if bad:
        log.warning("%d unreadable image(s) skipped, e.g. %s", len(bad), bad[0])
    return good, bad


def collate(
    batch: list[tuple[Any, int, int, int]],
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    imgs, pids, camids, idx = zip(*batch)
    first = imgs[0]
    if isinstance(first, torch.Tensor):
        stacked: Any = torch.stack(imgs)
    else:  # tuple of views
        stacked = tuple(torch.stack(v) for v in zip(*imgs))
    return stacked, torch.tensor(pids), torch.tensor(camids), torch.tensor(idx)
