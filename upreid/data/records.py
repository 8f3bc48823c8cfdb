"""Typed dataset records shared by every reader, trainer and evaluator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DatasetLayoutError(ValueError):
    """A dataset folder that does not match its expected on-disk layout."""


@dataclass(frozen=True)
class Record:
    """One image: where it is, who it shows (pid) and which camera took it (0-based).

    ``path`` is a file path, or ``lmdb:<db folder>::<key>`` for an image stored in an LMDB.
    Unlabeled images carry ``pid = -1``; distractors carry ``pid = 0``.
    """

    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class ReIDData:
    """A labeled dataset split into train / query / gallery."""

    name: str
    train: tuple[Record, ...]
    query: tuple[Record, ...]
    gallery: tuple[Record, ...]

    def summary(self) -> dict[str, dict[str, int]]:
        """Images, identities and cameras per split."""
        return {
            name: split_stats(split)
            for name, split in (
                ("train", self.train),
                ("query", self.query),
                ("gallery", self.gallery),
            )
        }


def split_stats(records: Sequence[Record]) -> dict[str, int]:
    return {
        "images": len(records),
        "identities": len({r.pid for r in records}),
        "cameras": len({r.camid for r in records}),
    }


def relabel(records: Sequence[Record]) -> tuple[tuple[Record, ...], int]:
    """Map the pids of a training split to 0..C-1 (sorted order); return records and C."""
    pids = sorted({r.pid for r in records})
    index = {pid: i for i, pid in enumerate(pids)}
    return tuple(Record(r.path, index[r.pid], r.camid) for r in records), len(pids)
