"""Final metrics of the runs by key, and one cell's values over seeds: what the tables and
figures read."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from upreid import tracking
from upreid.experiments import pretrain_name

ABSENT = "absent"


@dataclass(frozen=True)
class Value:
    """Our measurement of one metric of one cell, over seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def text(self) -> str:
        if not self.values:
            return ABSENT
        if self.std is None:
            return f"{self.mean:.1f}"
        return f"{self.mean:.1f}±{self.std:.1f} (n={len(self.values)})"


class Runs:
    """Lookup of final metrics by run key prefix (seeds pooled)."""

    def __init__(self, runs: dict[str, tracking.RunRecord]) -> None:
        self.runs = runs

    def value(self, prefix: str, metric: str) -> Value:
        vals = [
            r.metrics[metric]
            for k, r in sorted(self.runs.items())
            if (k == prefix or k.startswith(prefix + "/s")) and metric in r.metrics
        ]
        return Value(tuple(vals))

    def finetune(self, method: str, dataset: str, init: str, metric: str) -> Value:
        return self.value(f"finetune/{method}/{dataset}/{init}", metric)

    def over_pretrain_seeds(
        self, method: str, dataset: str, init: str, metric: str, seeds: int, seed: int
    ) -> dict[int, float]:
        """``init``'s fine-tuned ``metric`` per pre-training seed offset (0..seeds-1), each with
        the first fine-tune seed ``seed``: the runs ``<init>/s<seed>``, ``<init>-p1/s<seed>``..."""
        found = {}
        for p in range(seeds):
            run = self.runs.get(f"finetune/{method}/{dataset}/{pretrain_name(init, p)}/s{seed}")
            if run is not None and metric in run.metrics:
                found[p] = run.metrics[metric]
        return found

    def ids(self, prefix: str) -> list[str]:
        return [
            r.run_id
            for k, r in sorted(self.runs.items())
            if k == prefix or k.startswith(prefix + "/s")
        ]
