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
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from upreid import tracking
from upreid.experiments import FILE_PREFIX, FinetuneRun, init_kind
from upreid.params import Params
from upreid.runtime import Runtime, build_runtime
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
    if solo and _share_threads:
        import torch

        torch.set_num_threads(_share_threads.pop(0))
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


# The thread count of each next solo unit this rank does under :func:`spread` (CPU only).
_share_threads: list[int] = []
CORES_ENV = "UPREID_CORES"  # the cores the processes of a node share (set by the relaunch)


def share_threads(
    shares: list[int], rank: int, local_rank: int, local_world: int, cores: int
) -> list[int]:
    """Threads for each run of ``rank``'s share, ``shares`` being every rank's run count: the
    node's cores divided among its ranks that still have a run at that position, so that a
    rank left with the last runs of a stage takes the cores the others no longer use. A plan,
    not a reaction to timing: the same runs get the same thread counts every time."""
    node = range(rank - local_rank, rank - local_rank + local_world)
    return [max(1, cores // sum(1 for r in node if shares[r] > i)) for i in range(shares[rank])]


def spread(params: Params, units: list[Any], do: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """``do(units)``, with the units spread over the ``torchrun`` ranks (one device each) when
    there are several: each rank does every ``world``-th unit, then rank 0 goes over them all,
    reusing the finished results (and logging those of the other ranks to MLflow). Each rank's
    runs are its own (:func:`upreid.train.distributed.alone`); on CPU cores they share the
    node's cores by :func:`share_threads` when the relaunch set the cores to share."""
    rt = runtime_of(params)
    if rt.world == 1:
        return do(units)
    from datetime import timedelta

    import torch

    from upreid.train.distributed import alone, barrier, cleanup, init_distributed

    # gloo even on GPUs: only barriers, and a rank waiting for the longest share holds no GPU
    owned = init_distributed(rt, timeout=timedelta(days=7), backend="gloo")
    mine = units[rt.rank :: rt.world]
    threads = torch.get_num_threads()
    if rt.device.type == "cpu" and os.environ.get(CORES_ENV):
        shares = [len(units[r :: rt.world]) for r in range(rt.world)]
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", rt.world))
        _share_threads[:] = share_threads(
            shares, rt.rank, rt.local_rank, local_world, int(os.environ[CORES_ENV])
        )
    try:
        with alone():
            if mine:
                do(mine)
        _share_threads.clear()
        barrier()
        with alone():
            results = do(units) if rt.main else []
        barrier()
    finally:
        _share_threads.clear()
        torch.set_num_threads(threads)
    if owned:
        cleanup()
    return results


def require_spread(what: str) -> None:
    """Runs done alone per process must come through :func:`spread` under ``torchrun``
    (otherwise every rank would do every run in the same folders)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise ValueError(
                f"{what} under torchrun runs through its stage, which spreads the "
                "runs over the processes; run this command in one process"
            )


def relaunch_distributed(params: Params, argv: list[str]) -> None:
    """Replace this process by ``torchrun`` over the same script when ``launch`` asks for more
    than one process and we are not already under torchrun. On CUDA (``runtime.device`` auto or
    cuda) a node runs at most one process per GPU, each taking the GPU of its local rank."""
    launch = params.launch
    if launch.nproc_per_node * launch.nnodes <= 1 or "LOCAL_RANK" in os.environ:
        return
    nproc = launch.nproc_per_node
    if params.runtime.device in ("auto", "cuda"):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if 0 < gpus < nproc:
            log.warning(
                "launch.nproc_per_node is %d but this machine has %d CUDA device(s): "
                "running %d process(es), one per device",
                nproc,
                gpus,
                gpus,
            )
            nproc = gpus
            if nproc * launch.nnodes <= 1:
                return
    cmd = ["torchrun", f"--nproc_per_node={nproc}", f"--nnodes={launch.nnodes}"]
    if launch.nnodes > 1:
        cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={launch.rdzv_endpoint}"]
    else:
        cmd += ["--standalone"]
    if "OMP_NUM_THREADS" not in os.environ:  # each process its share of the cores (torchrun
        # would give each one thread); spread runs re-divide them as ranks run out of runs
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        cores = cores or 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
        os.environ[CORES_ENV] = str(cores)
    log.info("relaunching under %s", " ".join(cmd))
    os.execvp(cmd[0], [*cmd, *argv])


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
