"""The orchestration core every step shares: where things live, the runtime, the inputs a run
depends on, one unit of work tracked in MLflow, runs spread over ``torchrun`` ranks.

The steps themselves live in :mod:`upreid.steps` (data, pre-training, fine-tuning, SpCL,
report, inference); ``stages/*.py`` (run by DVC) and the CLI call them. Each step logs one
MLflow run per unit of work (nested under the pipeline run), writes its files atomically, and
skips work whose inputs are unchanged (:mod:`upreid.units`), so that ``dvc repro`` after a
change elsewhere, or after a crash, redoes only what it must.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from upreid import tracking
from upreid.experiments import FILE_PREFIX, FinetuneRun, init_kind
from upreid.params import Params
from upreid.runtime import Runtime, build_runtime
from upreid.train.distributed import relaunch, take_planned_threads
from upreid.train.distributed import require_spread as require_spread  # the steps' check
from upreid.train.distributed import spread as spread_over_ranks
from upreid.units import Unit, Work, run_unit

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
        return self.runs / "finetune" / run.method / run.dataset / run.dirname

    def spcl(self, setting: str, init: str) -> Path:
        return self.runs / "spcl" / setting / init


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def listing_digest(root: Path) -> str:
    """Hash of every file's relative path, size and size under ``root`` (cheap, no reads)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_size}\n".encode())
    return h.hexdigest()[:16]


def runtime_of(params: Params, solo: bool = False) -> Runtime:
    """This process's device, precision and rank, from the ``runtime`` section. ``solo``: a
    run this process does alone (spread over ranks): it owns its files, as a rank 0 would."""
    rt = params.runtime
    runtime = build_runtime(rt.device, rt.precision, rt.channels_last)
    return dataclasses.replace(runtime, rank=0, world=1) if solo else runtime


def manifest_digest(paths: Paths) -> str:
    if not paths.manifest.is_file():
        raise FileNotFoundError(
            f"{paths.manifest} not found: run the data stage first "
            "(dvc repro data, or upreid data synth)"
        )
    return file_digest(paths.manifest)


def dataset_inputs(paths: Paths, **contexts: str) -> dict[str, dict[str, Any]]:
    """MLflow dataset inputs of a unit, by context (``train=market1501``), from the manifest."""
    import json

    manifest = json.loads(paths.manifest.read_text())
    return {
        context: {"name": name, "source": str(paths.dataset(name)), **manifest.get(name, {})}
        for context, name in contexts.items()
    }


def track(params: Params, unit: Unit, work: Work, solo: bool = False) -> dict[str, Any]:
    """:func:`upreid.units.run_unit` with the pipeline's profile and tags. A ``solo`` unit of
    this rank's share under :func:`spread` takes its planned number of threads."""
    if solo:
        take_planned_threads()
    tags = {"params_hash": params.digest(), "seed": params.seed}
    return run_unit(unit, work, params.profile, tags, solo=solo, root=params.root)


def init_weights(params: Params, paths: Paths, init: str) -> str | None:
    kind = init_kind(init)
    if kind == "scratch":
        return None
    if kind == "file":
        return str(paths.root / init[len(FILE_PREFIX) :])  # absolute paths stay as they are
    if kind == "insup":
        return str(paths.root / params.finetune.insup_weights)
    return str(paths.backbone(init))


def spread(params: Params, units: list[Any], do: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """:func:`upreid.train.distributed.spread` on this process's runtime."""
    return spread_over_ranks(runtime_of(params), units, do)


def relaunch_distributed(params: Params, argv: list[str]) -> None:
    """:func:`upreid.train.distributed.relaunch` with the ``launch`` and ``runtime`` sections."""
    relaunch(
        params.launch.nproc_per_node,
        params.launch.nnodes,
        params.launch.rdzv_endpoint,
        params.runtime.device,
        argv,
    )


def where(params: Params, root: str | Path | None = None, port: int = 5000) -> str:
    """Where the results are and how to browse the runs (the training runs' page)."""
    paths = Paths(params, root)
    uri = tracking.tracking_uri(paths.root)
    url = tracking.ui_url(params.profile, paths.root, f"http://127.0.0.1:{port}")
    ui = f"mlflow ui --backend-store-uri {uri} --port {port}  then " if "sqlite" in uri else ""
    return (
        f"Tables and figures: {paths.reports.resolve() / 'README.md'}\n"
        f"MLflow runs (experiment upreid-{params.profile}): {ui}open {url}"
    )
