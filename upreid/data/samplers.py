"""Identity-balanced batch sampling (P identities x K images), shared by fine-tuning and SpCL."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKSampler(Sampler[int]):
    """Yields indices so that each run of ``p * k`` consecutive indices holds ``p`` identities
    with ``k`` images each (an identity with fewer than ``k`` images is sampled with replacement).

    Labels ``< 0`` (unclustered outliers) are never sampled. One epoch visits every identity
    about ``len(images) / (p * k)`` batches' worth; call :meth:`set_epoch` for a new order.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"PKSampler: p and k must be positive, got p={p}, k={k}")
        self.index: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(labels):
            if label >= 0:
                self.index[int(label)].append(i)
        if len(self.index) < p:
            raise ValueError(f"PKSampler: {len(self.index)} identities, fewer than p={p}")
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        images = sum(len(v) for v in self.index.values())
        self.batches = max(1, images // (p * k))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches * self.p * self.k

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        ids = np.array(sorted(self.index))
        for _ in range(self.batches):
            for pid in rng.choice(ids, size=self.p, replace=False):
                pool = self.index[int(pid)]
                replace = len(pool) < self.k
                yield from (int(i) for i in rng.choice(pool, size=self.k, replace=replace))
