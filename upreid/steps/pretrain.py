"""Step ``pretrain``: one pre-training variant, its backbone exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upreid.experiments import pretrain_variant
from upreid.io import atomic_write_json
from upreid.params import Params, to_dict
from upreid.pipeline import MetricsFn, Paths, manifest_digest, runtime_of, track
from upreid.units import Unit, digest, is_rank0


def run_pretrain(
    params: Params, variant: str, root: str | Path | None = None, max_steps: int | None = None
) -> dict[str, Any]:
    """Pre-train one variant (``moco``, ``upreid``, an ablation) and export its backbone."""
    from upreid.data.readers import read_pool
    from upreid.train.pretrain import pretrain

    paths = Paths(params, root)
    pp = pretrain_variant(params.pretrain, variant)
    input_hash = digest(to_dict(pp), params.seed, manifest_digest(paths), max_steps)
    out = paths.pretrain(variant)

    def work(folder: Path, on_metrics: MetricsFn) -> dict[str, Any]:
        records = read_pool(paths.dataset("luperson"))
        return pretrain(
            pp,
            records,
            folder,
            params.seed,
            runtime_of(params),
            on_metrics=on_metrics,
            max_steps=max_steps,
        )

    unit = Unit(
        f"pretrain/{variant}",
        out,
        input_hash,
        {
            "pretrain": to_dict(pp),
            "seed": params.seed,
            "variant": variant,
            "runtime": to_dict(params.runtime),
        },
        tags={"variant": variant},
        artifacts=("backbone.pt",),
        resume_state="checkpoint.pt",
    )
    metrics = track(params, unit, work)
    if is_rank0():
        atomic_write_json(paths.metrics / "pretrain" / f"{variant}.json", metrics)
    return metrics
