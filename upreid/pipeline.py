"""The pipeline's steps as plain functions: data, pre-training, fine-tuning, SpCL, report.

``stages/*.py`` (run by DVC) and the CLI call these. Each step logs one MLflow run per unit of
work (nested under the pipeline run), writes its own files atomically, and skips work whose
inputs are unchanged (same input hash, finished result on disk), so that ``dvc repro`` after a
change elsewhere, or after a crash, redoes only what it must. Interrupted training resumes from
its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from upreid import tracking
from upreid.experiments import (
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

log = logging.getLogger(__name__)

MetricsFn = Callable[[dict[str, float], int], None]


class Paths:
    """Where each step writes, relative to the project root."""

    def __init__(self, params: Params, root: str | Path = ".") -> None:
        self.root = Path(root)
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


def digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def runtime_of(params: Params) -> Runtime:
    """This process's device, precision and rank, from the ``runtime`` section."""
    rt = params.runtime
    return build_runtime(rt.device, rt.precision, rt.channels_last)


def _manifest_digest(paths: Paths) -> str:
    if not paths.manifest.is_file():
        raise FileNotFoundError(f"{paths.manifest} not found: run the data stage first "
                                "(dvc repro data, or upreid data synth)")
    return file_digest(paths.manifest)


# ----------------------------------------------------------------------------- caching


def _cached(out: Path, input_hash: str) -> dict[str, Any] | None:
    """The saved result of ``out`` if it was made from the same inputs."""
    result = out / "result.json"
    if result.is_file():
        saved = json.loads(result.read_text())
        if saved.get("input_hash") == input_hash:
            return saved
    return None


def _fresh_dir(out: Path, input_hash: str) -> None:
    """Clear ``out`` if it holds work made from other inputs; keep a resumable checkpoint of
    the same inputs."""
    stamp = out / "inputs.json"
    if out.exists():
        same = stamp.is_file() and json.loads(stamp.read_text()).get("input_hash") == input_hash
        if not same:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, {"input_hash": input_hash})


def _tracked(params: Params, key: str, input_hash: str, out: Path, run_params: dict[str, Any],
             work: Callable[[MetricsFn], dict[str, Any]], artifacts: tuple[str, ...] = (),
             tags: dict[str, Any] | None = None, resume_state: str = "",
             solo: bool = False) -> dict[str, Any]:
    """Run ``work`` (or reuse its saved result) inside an MLflow run named ``key``.

    Under ``torchrun`` only rank 0 talks to MLflow. A DDP unit of work runs on every rank and
    rank 0 records it; a ``solo`` unit (one of the runs a stage spreads over its ranks) runs on
    one rank, which writes its result; rank 0 logs it to MLflow afterwards (it finds the result
    on disk, not in MLflow, and re-logs it).

    Once ``result.json`` is written, ``out/resume_state`` (the run's checkpoint) is deleted: a
    finished run keeps its product (backbone.pt, best.pt, model.pt); the resume state (weights,
    optimizer, queue or memory) would triple the disk dozens of runs take, and the time DVC
    spends hashing the outputs. A kill before that point leaves it to resume from."""
    cached = _cached(out, input_hash)
    commit = git_commit()
    tags = {"input_hash": input_hash, "params_hash": params.digest(), "seed": params.seed,
            **(tags or {})}
    if cached is not None:
        if not is_rank0() or tracking.find_run(params.profile, key, input_hash):
            log.info("%s: unchanged inputs, result reused", key)
            return cached["metrics"]
        log.info("%s: unchanged inputs, result re-logged to MLflow", key)
    elif not is_rank0() and not solo:
        return work(lambda metrics, step: None)
    if cached is None:
        _fresh_dir(out, input_hash)
    if not is_rank0():  # a solo unit on another rank: the files, no MLflow
        return _do_work(work, out, input_hash, key, commit, resume_state, lambda m, s: None)
    with tracking.stage_run(key, profile=params.profile, params=run_params, tags=tags,
                            commit=commit) as run:
        if cached is None:
            metrics = _do_work(work, out, input_hash, key, commit, resume_state,
                               run.log_metrics)
        else:
            metrics = cached["metrics"]
            for row in json.loads((out / "metrics_log.json").read_text()):
                step = row.pop("step")
                run.log_metrics(row, step)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)},
                        _final_step(out))
        for name in ("result.json", "metrics_log.json", "curves.png", *artifacts):
            run.log_artifact(out / name)
    return metrics


def _do_work(work: Callable[[MetricsFn], dict[str, Any]], out: Path, input_hash: str, key: str,
             commit: str, resume_state: str, log_metrics: MetricsFn) -> dict[str, Any]:
    """Run ``work``, then write its metrics log, curves and ``result.json`` (the record that
    the run is done with these inputs) and drop its resume state."""
    from upreid.report.figures import run_curves

    history: list[dict[str, Any]] = []

    def on_metrics(metrics: dict[str, float], step: int) -> None:
        history.append({"step": step, **metrics})
        log_metrics(metrics, step)

    metrics = work(on_metrics)
    atomic_write_json(out / "metrics_log.json", history)
    run_curves(history, out / "curves.png")
    atomic_write_json(out / "result.json", {"input_hash": input_hash, "key": key,
                                            "metrics": metrics, "commit": commit})
    if resume_state:
        (out / resume_state).unlink(missing_ok=True)
    return metrics


def _final_step(out: Path) -> int:
    log_file = out / "metrics_log.json"
    rows = json.loads(log_file.read_text()) if log_file.is_file() else []
    return int(rows[-1]["step"]) if rows else 0


# ----------------------------------------------------------------------------- steps


def run_data(params: Params, root: str | Path = ".") -> dict[str, Any]:
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
            summary[name] = check_dataset(name, paths.dataset(name))
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


def run_pretrain(params: Params, variant: str, root: str | Path = ".",
                 max_steps: int | None = None) -> dict[str, Any]:
    """Pre-train one variant (``moco``, ``upreid``, an ablation) and export its backbone."""
    from upreid.data.readers import read_pool
    from upreid.train.pretrain import pretrain

    paths = Paths(params, root)
    pp = pretrain_variant(params.pretrain, variant)
    input_hash = digest(to_dict(pp), params.seed, _manifest_digest(paths), max_steps)
    out = paths.pretrain(variant)

    def work(on_metrics: MetricsFn) -> dict[str, Any]:
        records = read_pool(paths.dataset("luperson"))
        return pretrain(pp, records, out, params.seed, runtime_of(params),
                        on_metrics=on_metrics, max_steps=max_steps)

    metrics = _tracked(params, f"pretrain/{variant}", input_hash, out,
                       {"pretrain": to_dict(pp), "seed": params.seed, "variant": variant,
                        "runtime": to_dict(params.runtime)},
                       work, artifacts=("backbone.pt",), tags={"variant": variant},
                       resume_state="checkpoint.pt")
    if is_rank0():
        atomic_write_json(paths.metrics / "pretrain" / f"{variant}.json", metrics)
    return metrics


def _init_weights(params: Params, paths: Paths, init: str) -> str | None:
    kind = init_kind(init)
    if kind == "scratch":
        return None
    if kind == "insup":
        return str(paths.root / params.finetune.insup_weights)
    return str(paths.backbone(init))


def run_finetune(params: Params, method: str, dataset: str,
                 root: str | Path = ".") -> dict[str, Any]:
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


def finetune_many(params: Params, runs: list[FinetuneRun], root: str | Path = ".",
                  data_path: str | Path | None = None) -> list[dict[str, Any]]:
    """Fine-tune each run (all on one dataset); every weights file is checked first."""
    from upreid.data.readers import read_dataset
    from upreid.train.finetune import finetune

    paths = Paths(params, root)
    for run in runs:  # every weights file is there before any long work starts
        check_init(init_kind(run.init), _init_weights(params, paths, run.init))
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

        def work(on_metrics: MetricsFn, run: FinetuneRun = run, out: Path = out,
                 weights: str | None = weights) -> dict[str, Any]:
            fp = params.finetune
            return finetune(method, mp, fp.arch, data, init_kind(run.init), weights, out,
                            params.eval, run.seed, runtime_of(params), workers=fp.workers,
                            on_metrics=on_metrics, checkpoint_every=fp.checkpoint_every,
                            image_cache_mb=fp.image_cache_mb)

        results.append(_tracked(
            params, run.key, input_hash, out,
            {"finetune": to_dict(mp), "arch": params.finetune.arch, "eval": to_dict(params.eval),
             "init": run.init, "seed": run.seed, "method": method, "dataset": dataset,
             "runtime": to_dict(params.runtime)},
            work, artifacts=("history.json", "best.pt"),
            tags={"method": method, "dataset": dataset, "init": run.init, "run_seed": run.seed},
            resume_state="last.pt", solo=True))
    return results


def run_spcl(params: Params, setting: str, root: str | Path = ".") -> dict[str, Any]:
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
              root: str | Path = ".", setting: str | None = None) -> dict[str, Any]:
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

    def work(on_metrics: MetricsFn) -> dict[str, Any]:
        fp = params.finetune
        return adapt(params.spcl, fp.arch, target, source, init_kind(init), weights, out,
                     params.eval, params.seed, runtime_of(params), workers=fp.workers,
                     on_metrics=on_metrics, checkpoint_every=fp.checkpoint_every,
                     image_cache_mb=fp.image_cache_mb)

    return _tracked(
        params, f"spcl/{setting}/{init}", input_hash, out,
        {"spcl": to_dict(params.spcl), "arch": params.finetune.arch, "init": init,
         "setting": setting, "seed": params.seed, "source": source_name, "target": target_name,
         "runtime": to_dict(params.runtime)},
        work, artifacts=("history.json", "model.pt"), tags={"setting": setting, "init": init},
        resume_state="last.pt", solo=True)


def ablate_variant(params: Params, variant: str, root: str | Path = ".") -> dict[str, Any]:
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


def figure8(params: Params, root: str | Path = ".", count: int = 4) -> Path | None:
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


def run_report(params: Params, root: str | Path = ".") -> dict[str, Any]:
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


def where(params: Params, root: str | Path = ".") -> str:
    """Where the results are and how to browse the runs."""
    paths = Paths(params, root)
    uri = tracking.tracking_uri(root)
    ui = (f"mlflow ui --backend-store-uri {uri} --port 5000" if uri.startswith("sqlite")
          else f"open {uri}")
    return (f"Tables and figures: {paths.reports.resolve() / 'README.md'}\n"
            f"MLflow runs (experiment upreid-{params.profile}): {ui}  then open "
            "http://127.0.0.1:5000")
