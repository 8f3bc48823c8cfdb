"""The pipeline's steps, one module each; :mod:`upreid.pipeline` holds the orchestration they
share, and this module the summary each stage writes for DVC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upreid.io import atomic_write_json


def write_stage_metrics(
    path: Path, results: dict[str, dict[str, Any]], keys: tuple[str, ...]
) -> None:
    """The stage's DVC metrics file: a few numbers per key and run group (a run's seeds are
    averaged: ``moco-s0``, ``moco-s1`` -> ``moco``), e.g. ``{"mAP": {"moco": 41.2}}``. Every
    value of every run stays in its ``result.json``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, metrics in results.items():
        groups.setdefault(name.rsplit("-s", 1)[0], []).append(metrics)
    summary = {
        key: {
            group: round(sum(m[key] for m in runs) / len(runs), 3)
            for group, runs in groups.items()
            if all(key in m for m in runs)
        }
        for key in keys
    }
    atomic_write_json(path, summary)
