"""Step ``pretrain``: the pre-training variants, each with its backbone exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upreid.experiments import PRETRAIN_VARIANTS, needed_variants, pretrain_variant
from upreid.params import Params, to_dict
from upreid.pipeline import (
    MetricsFn,
    Paths,
    dataset_inputs,
    manifest_digest,
    runtime_of,
    track,
)
from upreid.steps import write_stage_metrics
from upreid.units import Unit, digest, is_rank0


def run_pretrain_stage(
    params: Params, variants: list[str] | None = None, root: str | Path | None = None
) -> dict[str, dict[str, Any]]:
    """The stage: every variant the tables need (or ``variants``), one after another. Each is
    its own unit of work (skipped when done with the same inputs, resumed when killed)."""
    chosen = variants or needed_variants(params)
    for variant in chosen:
        if variant not in PRETRAIN_VARIANTS:
            raise ValueError(
                f"unknown pre-training variant {variant!r}; valid are {list(PRETRAIN_VARIANTS)}"
            )
    results = {variant: run_pretrain(params, variant, root) for variant in chosen}
    if is_rank0() and variants is None:
        write_stage_metrics(Paths(params, root).metrics / "pretrain.json", results, ("loss",))
    return results


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
        datasets=dataset_inputs(paths, train="luperson"),
    )
    return track(params, unit, work)
