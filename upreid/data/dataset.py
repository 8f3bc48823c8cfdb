"""Torch datasets over records; bad images are skipped (with a warning and a count)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from upreid.data.images import BadImage, ImageCache, reader, split_lmdb
from upreid.data.records import Record

if TYPE_CHECKING:
    from upreid.data.transforms import PretrainViews

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
        img, i = self._good(index)
        rec = self.records[i]
        return self.transform(img), rec.pid, rec.camid, i

    def _good(self, index: int) -> tuple[Any, int]:
        """The image of record ``index``, or of the next readable one, and its index."""
        for offset in range(len(self.records)):
            i = (index + offset) % len(self.records)
            try:
                return self.read(self.records[i].path), i
            except BadImage as err:
                self._skip(i, err)
        raise RuntimeError("ImageDataset: every image is unreadable")

    def _skip(self, i: int, err: BadImage) -> None:
        if i not in self.bad:
            self.bad.add(i)
            log.warning("skipping unreadable image (%d so far): %s", len(self.bad), err)


def person_of(rec: Record) -> str:
    """The person a pool image's name gives: its folder (the LMDB's, or the file's) and the
    part of its name before the first ``_`` (``/pool/000123`` for ``/pool/000123_04_01.jpg``;
    the whole name when it has no ``_``). The folder keeps tracklet ids that are unique only
    within one video folder apart."""
    where = split_lmdb(rec.path)
    name = f"{where[0]}/{where[1]}" if where else rec.path
    folder, _, base = name.replace("\\", "/").rpartition("/")
    return f"{folder}/{base.partition('_')[0]}"


class PersonPairs(ImageDataset):
    """``((x_o, x_q, x_k), pid, camid, index)``: ``x_o`` and ``x_q`` from a record's image,
    ``x_k`` from another image of its person (:func:`person_of`) drawn uniformly with torch's
    generator. When the person has no other readable image, ``x_k`` is a second view of the
    record's own image (a drawn partner that cannot be decoded is skipped and counted)."""

    def __init__(
        self, records: Sequence[Record], views: PretrainViews, cache: ImageCache | None = None
    ) -> None:
        super().__init__(records, views, cache)
        self.views = views
        ids: dict[str, int] = {}
        self.person = [ids.setdefault(person_of(rec), len(ids)) for rec in self.records]
        self.members: list[list[int]] = [[] for _ in ids]
        for i, k in enumerate(self.person):
            self.members[k].append(i)
        paired = sum(len(m) for m in self.members if len(m) > 1)
        if not paired:
            raise ValueError(
                "pretrain.positives: person needs pool images named <person>_... with two or "
                "more per person; every name here is its own person (use positives: image)"
            )
        log.info("%d of %d pool images show a person with another image", paired, len(records))

    def __getitem__(self, index: int) -> tuple[Any, int, int, int]:
        img, i = self._good(index)
        rec = self.records[i]
        partner = self._partner(i)
        x_k = self.views.augment(img if partner is None else partner)
        return (self.views.original(img), self.views.augment(img), x_k), rec.pid, rec.camid, i

    def _partner(self, i: int) -> Any:
        """A readable image of another record of ``i``'s person, or None."""
        others = [j for j in self.members[self.person[i]] if j != i and j not in self.bad]
        while others:
            j = others.pop(int(torch.randint(len(others), ())))
            try:
                return self.read(self.records[j].path)
            except BadImage as err:
                self._skip(j, err)
        return None


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
