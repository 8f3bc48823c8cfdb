"""Step ``spcl``: SpCL runs, unsupervised on a target or adapted from a labeled source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upreid.experiments import SPCL_SETTINGS, init_kind
from upreid.models.init import check_init
from upreid.params import Params, to_dict
from upreid.pipeline import (
    MetricsFn,
    Paths,
    dataset_inputs,
    file_digest,
    init_weights,
    manifest_digest,
    require_spread,
    runtime_of,
    spread,
    track,
)
from upreid.steps import write_stage_metrics
from upreid.units import Unit, digest, is_rank0


def run_spcl(params: Params, root: str | Path | None = None) -> dict[str, Any]:
    """SpCL in every setting (``M``: target only; ``P2M``: PersonX -> Market-1501) from every
    init, spread over the processes; a metrics file per setting."""
    paths = Paths(params, root)
    for init in params.pipeline.inits:  # there (and an ImageNet file fits) before long work
        check_init(init_kind(init), init_weights(params, paths, init), params.finetune.arch)
    units = [(setting, init) for setting in SPCL_SETTINGS for init in params.pipeline.inits]

    def do(share: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [
            adapt_one(params, SPCL_SETTINGS[s][1], SPCL_SETTINGS[s][0], init, root, s)
            for s, init in share
        ]

    done = spread(params, units, do)
    if not is_rank0():
        return {}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for (setting, init), metrics in zip(units, done, strict=True):
        results.setdefault(setting, {})[init] = metrics
    for setting, group in results.items():
        write_stage_metrics(paths.metrics / "spcl" / f"{setting}.json", group, ("mAP",))
    return results


def adapt_one(
    params: Params,
    target_name: str,
    source_name: str | None,
    init: str,
    root: str | Path | None = None,
    setting: str | None = None,
) -> dict[str, Any]:
    """One SpCL run on ``target_name`` (with ``source_name``'s labels if given)."""
    from upreid.data.readers import read_dataset
    from upreid.train.spcl import adapt

    require_spread("SpCL")
    paths = Paths(params, root)
    weights = init_weights(params, paths, init)
    check_init(init_kind(init), weights, params.finetune.arch)
    setting = setting or (f"{source_name}2{target_name}" if source_name else target_name)
    target = read_dataset(target_name, paths.dataset(target_name))
    source = read_dataset(source_name, paths.dataset(source_name)) if source_name else None
    input_hash = digest(
        to_dict(params.spcl),
        params.finetune.arch,
        to_dict(params.eval),
        params.seed,
        init,
        weights and file_digest(weights),
        manifest_digest(paths),
        source_name,
        target_name,
    )
    out = paths.spcl(setting, init)

    def work(folder: Path, on_metrics: MetricsFn) -> dict[str, Any]:
        fp = params.finetune
        return adapt(
            params.spcl,
            fp.arch,
            target,
            source,
            init_kind(init),
            weights,
            folder,
            params.eval,
            params.seed,
            runtime_of(params, solo=True),
            workers=fp.workers,
            on_metrics=on_metrics,
            checkpoint_every=fp.checkpoint_every,
            image_cache_mb=fp.image_cache_mb,
        )

    unit = Unit(
        f"spcl/{setting}/{init}",
        out,
        input_hash,
        {
            "spcl": to_dict(params.spcl),
            "arch": params.finetune.arch,
            "init": init,
            "setting": setting,
            "seed": params.seed,
            "source": source_name,
            "target": target_name,
            "runtime": to_dict(params.runtime),
        },
        tags={"setting": setting, "init": init},
        artifacts=("history.json", "model.pt"),
        resume_state="last.pt",
        model="model.pt" if params.pipeline.log_models else "",
        datasets=dataset_inputs(
            paths, target=target_name, **({"source": source_name} if source_name else {})
        ),
    )
    return track(params, unit, work, solo=True)
