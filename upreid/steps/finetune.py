"""Step ``finetune``: every run of a supervised fine-tuning stage, and the ablation rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from upreid.experiments import (
    FinetuneRun,
    eval_every,
    finetune_datasets,
    finetune_runs,
    init_kind,
)
from upreid.models.init import check_init
from upreid.params import MethodParams, Params, to_dict
from upreid.pipeline import (
    MetricsFn,
    Paths,
    dataset_inputs,
    file_digest,
    init_weights,
    listing_digest,
    manifest_digest,
    require_spread,
    runtime_of,
    spread,
    track,
)
from upreid.steps import write_stage_metrics
from upreid.steps.pretrain import run_pretrain
from upreid.units import Unit, digest, is_rank0


def run_finetune(params: Params, method: str, root: str | Path | None = None) -> dict[str, Any]:
    """Every fine-tuning run of one method: each dataset, init and seed, spread over the
    processes; a metrics file per dataset."""
    paths = Paths(params, root)
    runs = [r for d in finetune_datasets(method) for r in finetune_runs(params, method, d)]

    def do(share: list[FinetuneRun]) -> list[dict[str, Any]]:
        # a share keeps the runs' order, grouped by dataset: results come back in that order
        done: list[dict[str, Any]] = []
        for dataset in dict.fromkeys(r.dataset for r in share):  # one read of each dataset
            done += finetune_many(params, [r for r in share if r.dataset == dataset], root)
        return done

    done = spread(params, runs, do)
    if not is_rank0():
        return {}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for run, metrics in zip(runs, done, strict=True):
        results.setdefault(run.dataset, {})[run.dirname] = metrics
    for dataset, group in results.items():  # a file per cell: a row each in `dvc metrics show`
        write_stage_metrics(
            paths.metrics / "finetune" / method / f"{dataset}.json", group, ("mAP",)
        )
    return results


def finetune_many(
    params: Params,
    runs: list[FinetuneRun],
    root: str | Path | None = None,
    data_path: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune each run (all on one dataset); every weights file is checked first."""
    from upreid.data.readers import read_dataset
    from upreid.train.finetune import finetune

    require_spread("fine-tuning")
    paths = Paths(params, root)
    for run in runs:  # every weights file is there (and fits) before any long work starts
        weights = init_weights(params, paths, run.init)
        check_init(init_kind(run.init), weights, params.finetune.arch)
    if len({(r.method, r.dataset) for r in runs}) > 1:
        raise ValueError("finetune_many: runs of one method and dataset only")
    method, dataset = runs[0].method, runs[0].dataset
    data = read_dataset(dataset, data_path or paths.dataset(dataset))
    data_id = manifest_digest(paths) if data_path is None else listing_digest(Path(data_path))
    results = []
    for run in runs:
        weights = init_weights(params, paths, run.init)
        mp = getattr(params.finetune, method)
        if data_path is None:  # evaluated as pipeline.curves says (runs of the plan)
            mp = dataclasses.replace(mp, eval_every=eval_every(params, run))
        input_hash = digest(
            to_dict(mp),
            params.finetune.arch,
            to_dict(params.eval),
            run.seed,
            run.init,
            weights and file_digest(weights),
            data_id,
        )
        out = paths.finetune(run)
        if data_path is not None:  # a user's dataset: its own folders, outside every stage's
            out = paths.runs / "data" / method / f"{dataset}@data-{data_id}" / out.name

        def work(
            folder: Path,
            on_metrics: MetricsFn,
            run: FinetuneRun = run,
            weights: str | None = weights,
            mp: MethodParams = mp,
        ) -> dict[str, Any]:
            fp = params.finetune
            return finetune(
                method,
                mp,
                fp.arch,
                data,
                init_kind(run.init),
                weights,
                folder,
                params.eval,
                run.seed,
                runtime_of(params, solo=True),
                workers=fp.workers,
                on_metrics=on_metrics,
                checkpoint_every=fp.checkpoint_every,
                image_cache_mb=fp.image_cache_mb,
            )

        key = run.key if data_path is None else f"{run.key}@data-{data_id}"
        unit = Unit(
            key,
            out,
            input_hash,
            {
                "finetune": to_dict(mp),
                "arch": params.finetune.arch,
                "eval": to_dict(params.eval),
                "init": run.init,
                "seed": run.seed,
                "method": method,
                "dataset": dataset,
                "runtime": to_dict(params.runtime),
            },
            tags={"method": method, "dataset": dataset, "init": run.init, "run_seed": run.seed},
            artifacts=("history.json", "best.pt"),
            resume_state="last.pt",
            model="best.pt" if params.pipeline.log_models else "",
            datasets=(
                dataset_inputs(paths, train=dataset)
                if data_path is None
                else {"train": {"name": dataset, "source": str(data_path)}}
            ),
        )
        results.append(track(params, unit, work, solo=True))
    return results


def ablate_variant(params: Params, variant: str, root: str | Path | None = None) -> dict[str, Any]:
    """Pre-train ``variant`` and the full model, fine-tune MGN on CUHK03 from each (reusing
    finished runs), and return both rows."""
    from upreid.experiments import ABLATION_STAGE

    method, dataset = ABLATION_STAGE
    for name in dict.fromkeys((variant, "upreid")):
        run_pretrain(params, name, root)
    runs = [
        FinetuneRun(method, dataset, name, params.seed)
        for name in dict.fromkeys((variant, "upreid"))
    ]
    return {r.init: m for r, m in zip(runs, finetune_many(params, runs, root), strict=True)}
