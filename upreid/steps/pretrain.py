"""Step ``pretrain``: the pre-training variants, each with its backbone exported."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from upreid.experiments import needed_variants, pretrain_variant, split_pretrain_name
from upreid.params import Params, PretrainParams, to_dict
from upreid.pipeline import (
    MetricsFn,
    Paths,
    dataset_inputs,
    manifest_digest,
    runtime_of,
    spread,
    track,
)
from upreid.steps import write_stage_metrics
from upreid.units import Unit, digest, is_rank0

if TYPE_CHECKING:
    from upreid.eval.frozen import Probe
    from upreid.runtime import Runtime


def run_pretrain_stage(
    params: Params, variants: list[str] | None = None, root: str | Path | None = None
) -> dict[str, dict[str, Any]]:
    """The stage: every pre-training run the tables need (or ``variants``: variants, or seeded
    runs such as ``moco-p1``), spread over the processes or (``launch.pretrain: ddp``) one after
    another. Each is its own unit of work (skipped when
    done with the same inputs, resumed when killed)."""
    chosen = list(dict.fromkeys(variants or needed_variants(params)))  # each run once
    for variant in chosen:
        split_pretrain_name(variant)  # a one-line error for an unknown name, before any work
    if params.launch.pretrain == "spread":  # one process per run, the runs over the processes
        done = spread(
            params, chosen, lambda share: [run_pretrain(params, v, root, solo=True) for v in share]
        )
        if not is_rank0():
            return {}
        results = dict(zip(chosen, done, strict=True))
    else:  # each run over every process (DDP)
        results = {variant: run_pretrain(params, variant, root) for variant in chosen}
    if is_rank0() and variants is None:
        metrics = Paths(params, root).metrics / "pretrain.json"
        write_stage_metrics(metrics, results, ("loss", "frozen_mAP"))
    return results


def run_pretrain(
    params: Params,
    variant: str,
    root: str | Path | None = None,
    max_steps: int | None = None,
    solo: bool = False,
) -> dict[str, Any]:
    """Pre-train one variant (``moco``, ``upreid``, an ablation; ``moco-p1``: pre-training seed
    offset 1) and export its backbone; ``solo``: in this process alone (a run of a stage
    spread over the processes), else over every process (DDP under ``torchrun``)."""
    from upreid.data.readers import read_pool
    from upreid.train.pretrain import pretrain

    paths = Paths(params, root)
    pp = pretrain_variant(params.pretrain, variant)
    base, offset = split_pretrain_name(variant)
    seed = params.seed + offset
    # what the probe's numbers depend on (not re-ranking, batch or chunk sizes)
    ev = params.eval
    probed = {"metric": ev.metric, "flip": ev.flip} if pp.frozen_eval else None
    input_hash = digest(to_dict(pp), seed, manifest_digest(paths), max_steps, probed)
    out = paths.pretrain(variant)

    def work(folder: Path, on_metrics: MetricsFn) -> dict[str, Any]:
        records = read_pool(paths.dataset("luperson"))
        rt = runtime_of(params, solo=solo)
        return pretrain(
            pp,
            records,
            folder,
            seed,
            rt,
            on_metrics=on_metrics,
            max_steps=max_steps,
            probe=frozen_sets_probe(params, paths, pp, rt),
            probe_every=pp.frozen_eval_every,
        )

    unit = Unit(
        f"pretrain/{variant}",
        out,
        input_hash,
        {
            "pretrain": to_dict(pp),
            "seed": seed,
            "variant": base,
            "runtime": to_dict(params.runtime),
            **({"eval": probed} if probed else {}),
        },
        tags={"variant": base, "pretrain_seed": str(seed)},
        artifacts=("backbone.pt",),
        resume_state="checkpoint.pt",
        datasets=dataset_inputs(paths, train="luperson"),
    )
    return track(params, unit, work, solo=solo)


_probes: dict[tuple[Any, ...], Probe] = {}  # the last one this process built


def frozen_sets_probe(
    params: Params, paths: Paths, pp: PretrainParams, rt: Runtime
) -> Probe | None:
    """Frozen-feature retrieval on the labeled sets ``pretrain.frozen_eval`` names, at the
    pre-training image size; None when that list is empty. The runs of one process share it
    (and its decoded images, and the untrained network's rows it measured)."""
    if not pp.frozen_eval:
        return None
    key = (
        str(paths.data.resolve()),
        manifest_digest(paths),
        tuple(pp.frozen_eval),
        params.eval,
        pp.height,
        pp.width,
        pp.workers,
        str(rt.device),
        params.runtime,
    )
    if key not in _probes:
        _probes.clear()  # keep one: each holds its sets and decoded images
        _probes[key] = _sets_probe(params, paths, pp, rt)
    return _probes[key]


def _sets_probe(params: Params, paths: Paths, pp: PretrainParams, rt: Runtime) -> Probe:
    from upreid.data.readers import read_dataset
    from upreid.eval.frozen import frozen_probe

    sets = {}
    for name in pp.frozen_eval:
        folder = paths.dataset(name)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"pretrain.frozen_eval names {name}, but {folder} does not exist; add the "
                "dataset there or take it out of pretrain.frozen_eval"
            )
        sets[name] = read_dataset(name, folder)
    return frozen_probe(sets, params.eval, pp.height, pp.width, rt, workers=pp.workers)
