"""The pipeline's steps as plain functions: data, pre-training, fine-tuning, SpCL, report.

``stages/*.py`` (run by DVC) and the CLI call these. Each step logs one MLflow run per unit of
work (nested under the pipeline run), writes its own files atomically, and skips work whose
inputs are unchanged (same input hash, finished result on disk), so that ``dvc repro`` after a
change elsewhere, or after a crash, redoes only what it must. Interrupted training resumes from
its last checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from upreid import tracking
from upreid.experiments import (
    FILE_PREFIX,
    PRETRAIN_VARIANTS,
    SPCL_SETTINGS,
    FinetuneRun,
    finetune_runs,
    init_kind,
    pretrain_variant,
)
from upreid.io import atomic_write_json, git_commit
from upreid.models.checkpoints import load_model
from upreid.models.init import check_init
from upreid.params import Params, to_dict
from upreid.runtime import Runtime, build_runtime
from upreid.units import Unit, Work, digest, is_rank0, run_unit

log = logging.getLogger(__name__)

MetricsFn = Callable[[dict[str, float], int], None]


class Paths:
    """Where each step writes, relative to the project root."""

    def __init__(self, params: Params, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else params.root
        self.data = self.root / params.data.root
        self.manifest = self.root / "data" / "manifest.json"
        self.runs = self.root / "runs"
        self.metrics = self.root / "metrics"
        self.reports = self.root / "reports"

    def dataset(self, name: str) -> Path:
        return self.data / name

    def pretrain(self, variant: str) -> Path:
        return self.runs / "pretrain" / variant

    def backbone(self, variant: str) -> Path:
        return self.pretrain(variant) / "backbone.pt"

    def finetune(self, run: FinetuneRun) -> Path:
        return self.runs / "finetune" / f"{run.method}-{run.dataset}" / run.dirname

    def spcl(self, setting: str, init: str) -> Path:
        return self.runs / "spcl" / setting / init


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def runtime_of(params: Params) -> Runtime:
    """This process's device, precision and rank, from the ``runtime`` section."""
    rt = params.runtime
    return build_runtime(rt.device, rt.precision, rt.channels_last)


def _manifest_digest(paths: Paths) -> str:
    if not paths.manifest.is_file():
        raise FileNotFoundError(f"{paths.manifest} not found: run the data stage first "
                                "(dvc repro data, or upreid data synth)")
    return file_digest(paths.manifest)


def _tracked(params: Params, unit: Unit, work: Work, solo: bool = False) -> dict[str, Any]:
    """:func:`upreid.units.run_unit` with the pipeline's profile and tags."""
    tags = {"params_hash": params.digest(), "seed": params.seed}
    return run_unit(unit, work, params.profile, tags, solo=solo, root=params.root)


# ----------------------------------------------------------------------------- steps


def run_data(params: Params, root: str | Path | None = None) -> dict[str, Any]:
    """Generate (``data.source: synth``) or check (``disk``) every dataset; write the manifest
    the later steps depend on, and the contact sheet."""
    from upreid.data.readers import READERS, check_dataset, read_pool

    paths = Paths(params, root)
    if params.data.source == "synth":
        from upreid.data.synth import synthesize, write_contact_sheet

        synthesize(params.data, paths.data, inside=paths.root)
        write_contact_sheet(paths.dataset("market1501"),
                            paths.reports / "figures" / "contact_sheet.png")
    summary: dict[str, Any] = {"source": params.data.source, "root": str(params.data.root),
                               "params": to_dict(params.data)}
    summary["luperson"] = {"images": len(read_pool(paths.dataset("luperson")))}
    for name in READERS:
        if paths.dataset(name).exists():
            summary[name] = {**check_dataset(name, paths.dataset(name)),
                             "root": str(Path(params.data.root) / name)}  # as in params
    summary["listing"] = _listing_digest(paths.data)
    atomic_write_json(paths.manifest, summary)
    return summary


def _listing_digest(root: Path) -> str:
    """Hash of every file's relative path, size and size under ``root`` (cheap, no reads)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_size}\n".encode())
    return h.hexdigest()[:16]


def run_pretrain(params: Params, variant: str, root: str | Path | None = None,
                 max_steps: int | None = None) -> dict[str, Any]:
    """Pre-train one variant (``moco``, ``upreid``, an ablation) and export its backbone."""
    from upreid.data.readers import read_pool
    from upreid.train.pretrain import pretrain

    paths = Paths(params, root)
    pp = pretrain_variant(params.pretrain, variant)
    input_hash = digest(to_dict(pp), params.seed, _manifest_digest(paths), max_steps)
    out = paths.pretrain(variant)

    def work(folder: Path, on_metrics: MetricsFn) -> dict[str, Any]:
        records = read_pool(paths.dataset("luperson"))
        return pretrain(pp, records, folder, params.seed, runtime_of(params),
                        on_metrics=on_metrics, max_steps=max_steps)

    unit = Unit(f"pretrain/{variant}", out, input_hash,
                {"pretrain": to_dict(pp), "seed": params.seed, "variant": variant,
                 "runtime": to_dict(params.runtime)}, tags={"variant": variant},
                artifacts=("backbone.pt",), resume_state="checkpoint.pt")
    metrics = _tracked(params, unit, work)
    if is_rank0():
        atomic_write_json(paths.metrics / "pretrain" / f"{variant}.json", metrics)
    return metrics


def _init_weights(params: Params, paths: Paths, init: str) -> str | None:
    kind = init_kind(init)
    if kind == "scratch":
        return None
    if kind == "file":
        return str(paths.root / init[len(FILE_PREFIX):])  # absolute paths stay as they are
    if kind == "insup":
        return str(paths.root / params.finetune.insup_weights)
    return str(paths.backbone(init))


def run_finetune(params: Params, method: str, dataset: str,
                 root: str | Path | None = None) -> dict[str, Any]:
    """Every fine-tuning run of one (method, dataset) stage: each init, each seed."""
    paths = Paths(params, root)
    runs = finetune_runs(params, method, dataset)
    done = spread(params, runs, lambda share: finetune_many(params, share, root))
    if not is_rank0():
        return {}
    results = {run.dirname: metrics for run, metrics in zip(runs, done, strict=True)}
    atomic_write_json(paths.metrics / "finetune" / f"{method}-{dataset}.json", results)
    return results


def spread(params: Params, units: list[Any], do: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """``do(units)``, with the units spread over the ``torchrun`` ranks (one device each) when
    there are several: each rank does every ``world``-th unit, then rank 0 goes over them all,
    reusing the finished results (and logging those of the other ranks to MLflow)."""
    rt = runtime_of(params)
    if rt.world == 1:
        return do(units)
    from datetime import timedelta

    from upreid.train.distributed import barrier, cleanup, init_distributed

    init_distributed(rt, timeout=timedelta(days=7))  # ranks wait for the longest share
    mine = units[rt.rank::rt.world]
    if mine:
        do(mine)
    barrier()
    results = do(units) if rt.main else []
    barrier()
    cleanup()
    return results


def finetune_many(params: Params, runs: list[FinetuneRun], root: str | Path | None = None,
                  data_path: str | Path | None = None) -> list[dict[str, Any]]:
    """Fine-tune each run (all on one dataset); every weights file is checked first."""
    from upreid.data.readers import read_dataset
    from upreid.train.finetune import finetune

    paths = Paths(params, root)
    for run in runs:  # every weights file is there (and fits) before any long work starts
        check_init(init_kind(run.init), _init_weights(params, paths, run.init))
        if init_kind(run.init) == "file":
            from upreid.models.backbone import build_backbone, load_backbone_file

            load_backbone_file(build_backbone(params.finetune.arch),
                               _init_weights(params, paths, run.init))  # type: ignore[arg-type]
    if len({(r.method, r.dataset) for r in runs}) > 1:
        raise ValueError("finetune_many: runs of one method and dataset only")
    method, dataset = runs[0].method, runs[0].dataset
    data = read_dataset(dataset, data_path or paths.dataset(dataset))
    mp = getattr(params.finetune, method)
    data_id = (_manifest_digest(paths) if data_path is None
               else _listing_digest(Path(data_path)))
    results = []
    for run in runs:
        weights = _init_weights(params, paths, run.init)
        input_hash = digest(to_dict(mp), params.finetune.arch, to_dict(params.eval), run.seed,
                            run.init, weights and file_digest(weights), data_id)
        out = paths.finetune(run)
        if data_path is not None:  # a user's dataset: its own folders, never the pipeline's
            out = out.parent.parent / f"{out.parent.name}@data-{data_id}" / out.name

        def work(folder: Path, on_metrics: MetricsFn, run: FinetuneRun = run,
                 weights: str | None = weights) -> dict[str, Any]:
            fp = params.finetune
            return finetune(method, mp, fp.arch, data, init_kind(run.init), weights, folder,
                            params.eval, run.seed, runtime_of(params), workers=fp.workers,
                            on_metrics=on_metrics, checkpoint_every=fp.checkpoint_every,
                            image_cache_mb=fp.image_cache_mb)

        key = run.key if data_path is None else f"{run.key}@data-{data_id}"
        unit = Unit(key, out, input_hash,
                    {"finetune": to_dict(mp), "arch": params.finetune.arch,
                     "eval": to_dict(params.eval), "init": run.init, "seed": run.seed,
                     "method": method, "dataset": dataset, "runtime": to_dict(params.runtime)},
                    tags={"method": method, "dataset": dataset, "init": run.init,
                          "run_seed": run.seed},
                    artifacts=("history.json", "best.pt"), resume_state="last.pt")
        results.append(_tracked(params, unit, work, solo=True))
    return results


def run_spcl(params: Params, setting: str, root: str | Path | None = None) -> dict[str, Any]:
    """SpCL in one setting (``M``: target only; ``P2M``: PersonX -> Market-1501), every init."""
    if setting not in SPCL_SETTINGS:
        raise ValueError(f"unknown SpCL setting {setting!r}; valid are {list(SPCL_SETTINGS)}")
    paths = Paths(params, root)
    source, target = SPCL_SETTINGS[setting]
    for init in params.pipeline.inits:
        check_init(init_kind(init), _init_weights(params, paths, init))
    inits = list(params.pipeline.inits)
    done = spread(params, inits, lambda share: [adapt_one(params, target, source, init, root,
                                                          setting) for init in share])
    if not is_rank0():
        return {}
    results = dict(zip(inits, done, strict=True))
    atomic_write_json(paths.metrics / "spcl" / f"{setting}.json", results)
    return results


def adapt_one(params: Params, target_name: str, source_name: str | None, init: str,
              root: str | Path | None = None, setting: str | None = None) -> dict[str, Any]:
    """One SpCL run on ``target_name`` (with ``source_name``'s labels if given)."""
    from upreid.data.readers import read_dataset
    from upreid.train.spcl import adapt

    paths = Paths(params, root)
    weights = _init_weights(params, paths, init)
    check_init(init_kind(init), weights)
    setting = setting or (f"{source_name}2{target_name}" if source_name else target_name)
    target = read_dataset(target_name, paths.dataset(target_name))
    source = read_dataset(source_name, paths.dataset(source_name)) if source_name else None
    input_hash = digest(to_dict(params.spcl), params.finetune.arch, to_dict(params.eval),
                        params.seed, init, weights and file_digest(weights),
                        _manifest_digest(paths), source_name, target_name)
    out = paths.spcl(setting, init)

    def work(folder: Path, on_metrics: MetricsFn) -> dict[str, Any]:
        fp = params.finetune
        return adapt(params.spcl, fp.arch, target, source, init_kind(init), weights, folder,
                     params.eval, params.seed, runtime_of(params), workers=fp.workers,
                     on_metrics=on_metrics, checkpoint_every=fp.checkpoint_every,
                     image_cache_mb=fp.image_cache_mb)

    unit = Unit(f"spcl/{setting}/{init}", out, input_hash,
                {"spcl": to_dict(params.spcl), "arch": params.finetune.arch, "init": init,
                 "setting": setting, "seed": params.seed, "source": source_name,
                 "target": target_name, "runtime": to_dict(params.runtime)},
                tags={"setting": setting, "init": init},
                artifacts=("history.json", "model.pt"), resume_state="last.pt")
    return _tracked(params, unit, work, solo=True)


def ablate_variant(params: Params, variant: str, root: str | Path | None = None) -> dict[str, Any]:
    """Pre-train ``variant`` and the full model, fine-tune MGN on CUHK03 from each (reusing
    finished runs), and return both rows."""
    from upreid.experiments import ABLATION_STAGE

    method, dataset = ABLATION_STAGE
    for name in dict.fromkeys((variant, "upreid")):
        run_pretrain(params, name, root)
    runs = [FinetuneRun(method, dataset, name, params.seed)
            for name in dict.fromkeys((variant, "upreid"))]
    return {r.init: m for r, m in zip(runs, finetune_many(params, runs, root), strict=True)}


def load_embedder(checkpoint: str | Path, runtime: Runtime) -> tuple[Any, int, int]:
    """``(embed, height, width)`` for a fine-tuned checkpoint (best.pt / last.pt) or a file of
    trunk weights (pooled features), computing on ``runtime``'s device."""
    loaded = load_model(checkpoint)
    runtime.place(loaded.model)
    return runtime.embedder(loaded.model, loaded.output), loaded.height, loaded.width


def evaluate_checkpoint(params: Params, checkpoint: str | Path, data_path: str | Path,
                        fmt: str, out: str | Path) -> dict[str, Any]:
    """Metrics of a checkpoint on a dataset, written to ``out/metrics.json`` with a picture of
    ranked lists in ``out/ranks.png``."""
    from upreid.data.readers import read_dataset
    from upreid.eval.evaluate import evaluate_with_distances
    from upreid.eval.visualize import ranked_list_png

    data = read_dataset(fmt, data_path)
    rt = runtime_of(params)
    embed, height, width = load_embedder(checkpoint, rt)
    metrics, distmat, query, gallery = evaluate_with_distances(embed, data, params.eval,
                                                               height, width, device=rt.device)
    out = Path(out)
    atomic_write_json(out / "metrics.json", {"checkpoint": str(checkpoint),
                                              "data": str(data_path), **metrics})
    ranked_list_png(distmat, query, gallery, out / "ranks.png")
    return metrics


def explain_checkpoints(checkpoints: list[Path], images: list[Path], out: Path,
                        runtime: Runtime, names: list[str] | None = None) -> Path:
    """Figure 8: response maps of each checkpoint side by side."""
    from upreid.report.explain import explain_png

    names = names or [f"{Path(c).parent.name}/{Path(c).name}" for c in checkpoints]
    models = {}
    for name, path in zip(names, checkpoints, strict=True):
        loaded = load_model(path)
        models[name] = (runtime.place(loaded.trunk), loaded.height, loaded.width)
    return explain_png(models, images, out)


def figure8(params: Params, root: str | Path | None = None, count: int = 4) -> Path | None:
    """Figure 8 from the BoT runs on Market-1501 fine-tuned from MoCo and from UP-ReID."""
    from upreid.data.readers import read_dataset

    paths = Paths(params, root)
    ckpts = [paths.finetune(FinetuneRun("bot", "market1501", init, params.seed)) / "best.pt"
             for init in ("moco", "upreid")]
    if not all(c.is_file() for c in ckpts):
        return None
    query = read_dataset("market1501", paths.dataset("market1501")).query
    step = max(1, len(query) // count)
    images = [Path(r.path) for r in query[::step][:count]]
    return explain_checkpoints(ckpts, images, paths.reports / "figures" / "figure8_explain.png",
                               runtime_of(params), names=["BoT from MoCo", "BoT from UP-ReID"])


def search_gallery(params: Params, checkpoint: str | Path, query: str | Path,
                   gallery: str | Path, topk: int) -> list[tuple[str, float]]:
    """The ``topk`` gallery images nearest to ``query``."""
    from upreid.eval.search import search

    rt = runtime_of(params)
    embed, height, width = load_embedder(checkpoint, rt)
    return search(embed, query, gallery, height, width, topk, device=rt.device)


def run_report(params: Params, root: str | Path | None = None) -> dict[str, Any]:
    """Write the paper's tables and figures to ``reports/`` from the MLflow runs."""
    from upreid.report.tables import write_reports

    paths = Paths(params, root)
    figure8(params, root)
    summary = write_reports(params, paths.reports, root=paths.root)
    atomic_write_json(paths.metrics / "report.json", summary)
    with tracking.stage_run("report", profile=params.profile, params={"seed": params.seed},
                            tags={"params_hash": params.digest(), "seed": params.seed},
                            commit=git_commit(), root=paths.root) as run:
        run.log_metrics(summary, 0)
        for name in ("README.md", "tables", "figures"):
            run.log_artifact(paths.reports / name, None if name == "README.md" else name)
    return summary


PRETRAIN_NAMES = tuple(PRETRAIN_VARIANTS)


def relaunch_distributed(params: Params, argv: list[str]) -> None:
    """Replace this process by ``torchrun`` over the same script when ``launch`` asks for more
    than one process and we are not already under torchrun."""
    launch = params.launch
    if launch.nproc_per_node * launch.nnodes <= 1 or "LOCAL_RANK" in os.environ:
        return
    cmd = ["torchrun", f"--nproc_per_node={launch.nproc_per_node}", f"--nnodes={launch.nnodes}"]
    if launch.nnodes > 1:
        cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={launch.rdzv_endpoint}"]
    else:
        cmd += ["--standalone"]
    log.info("relaunching under %s", " ".join(cmd))
    os.execvp(cmd[0], [*cmd, *argv])


def where(params: Params, root: str | Path | None = None) -> str:
    """Where the results are and how to browse the runs."""
    paths = Paths(params, root)
    uri = tracking.tracking_uri(paths.root)
    ui = (f"mlflow ui --backend-store-uri {uri} --port 5000" if uri.startswith("sqlite")
          else f"open {uri}")
    return (f"Tables and figures: {paths.reports.resolve() / 'README.md'}\n"
            f"MLflow runs (experiment upreid-{params.profile}): {ui}  then open "
            "http://127.0.0.1:5000")
