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


def person_of(rec: Record) -> str:
    """The person a pool image's name gives: its part before the first ``_`` (``000123`` for
    ``000123_04_01.jpg``; the whole name when it has no ``_``)."""
    name = rec.path.rpartition("::")[2] if "::" in rec.path else rec.path
    return name.replace("\\", "/").rpartition("/")[2].partition("_")[0]


def person_groups(records: Sequence[Record]) -> list[list[int]]:
    """For each record, the indices of the other records of its person (empty when alone)."""
    members: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        members.setdefault(person_of(rec), []).append(i)
    return [[j for j in members[person_of(rec)] if j != i] for i, rec in enumerate(records)]


class PersonPairs(ImageDataset):
    """``((x_o, x_q, x_k), pid, camid, index)`` where ``x_o`` and ``x_q`` come from a record's
    image and ``x_k`` from another image of the same person (:func:`person_of`), drawn with
    torch's generator (its own image when the person has no other). ``views`` is a
    :class:`~upreid.data.transforms.PretrainViews`."""

    def __init__(self, records: Sequence[Record], views: Any) -> None:
        super().__init__(records, views)
        self.views = views
        self.others = person_groups(self.records)
        if not any(self.others):
            raise ValueError(
                "pretrain.positives: person needs pool images named <person>_... with two or "
                "more per person; every name here is its own person (use positives: image)"
            )

    def __getitem__(self, index: int) -> tuple[Any, int, int, int]:
        (x_o, x_q, x_k), pid, camid, i = super().__getitem__(index)
        others = self.others[i]
        if others:
            j = others[int(torch.randint(len(others), ()))]
            try:
                x_k = self.views.augment(self.read(self.records[j].path))
            except BadImage as err:
                if j not in self.bad:
                    self.bad.add(j)
                    log.warning("skipping unreadable image (%d so far): %s", len(self.bad), err)
        return (x_o, x_q, x_k), pid, camid, i


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
