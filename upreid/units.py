"""A unit of work (one pre-training, fine-tuning or SpCL run) done once for given inputs.

:func:`run_unit` skips a unit whose ``result.json`` was made from the same inputs (the one record
that says "done with these inputs"; MLflow's run is derived from it and re-logged when missing),
resumes one that was killed (its folder holds a checkpoint and an ``inputs.json`` stamp of the
same inputs), and otherwise runs it inside an MLflow run. A unit with new inputs never touches a
finished run of other inputs until it succeeds: it builds in a staging folder beside it
(``.NAME.building``) and replaces the finished folder only at the end.

Under ``torchrun`` only rank 0 talks to MLflow. A DDP unit runs on every rank and rank 0
records it; a ``solo`` unit (one of the runs a stage spreads over its ranks) runs on one rank,
which writes its files; rank 0 logs it to MLflow afterwards, finding it done on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upreid import tracking
from upreid.io import atomic_write_json, git_commit

log = logging.getLogger(__name__)

MetricsFn = Callable[[dict[str, float], int], None]
Work = Callable[[Path, MetricsFn], dict[str, Any]]  # (folder to build in, metrics callback)
STAMP, RESULT, LOG = "inputs.json", "result.json", "metrics_log.json"


def digest(*parts: Any) -> str:
    """Short hash of plain data (the inputs of a unit)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Unit:
    """What a run is: its key (MLflow run name), folder, input hash and what it logs.

    ``resume_state`` is the checkpoint file dropped once the run is done: a finished run keeps
    its product (backbone.pt, best.pt, model.pt), not the optimizer and queue state."""

    key: str
    out: Path
    input_hash: str
    params: dict[str, Any]
    tags: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    resume_state: str = ""
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # MLflow inputs
    model: str = ""  # the file logged as the run's MLflow model (fine-tuning, SpCL)

    @property
    def staging(self) -> Path:
        return self.out.parent / f".{self.out.name}.building"


def done_result(folder: Path, input_hash: str) -> dict[str, Any] | None:
    """The saved result in ``folder`` if it was made from ``input_hash``."""
    path = folder / RESULT
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("input_hash") == input_hash:
            return saved
    return None


def _stamped(folder: Path, input_hash: str) -> bool:
    stamp = folder / STAMP
    return stamp.is_file() and json.loads(stamp.read_text()).get("input_hash") == input_hash


def choose_folder(unit: Unit) -> Path:
    """Where the unit builds: its own folder when that is new or holds an unfinished run of
    the same inputs (resume), else the staging folder beside it. Every rank of a DDP unit
    makes the same choice."""
    out = unit.out
    if not out.exists() or (_stamped(out, unit.input_hash) and not (out / RESULT).exists()):
        return out
    return unit.staging


def build_folder(unit: Unit) -> Path:
    """:func:`choose_folder`, made ready: a staging folder of other inputs (always the
    project's own) is cleared; the stamp records the inputs, so a kill resumes there."""
    folder = choose_folder(unit)
    if folder == unit.staging and folder.exists() and not _stamped(folder, unit.input_hash):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / STAMP, {"input_hash": unit.input_hash, "key": unit.key})
    return folder


def _promote(unit: Unit, folder: Path) -> None:
    """Put a finished staging folder in the unit's place (the old run goes only now)."""
    if folder == unit.out:
        return
    trash = unit.out.parent / f".{unit.out.name}.replaced"
    if trash.exists():
        shutil.rmtree(trash)
    unit.out.rename(trash)
    folder.rename(unit.out)
    shutil.rmtree(trash)


def _work_once(
    unit: Unit, work: Work, log_metrics: MetricsFn, commit: str, tags: dict[str, Any]
) -> dict[str, Any]:
    """Run ``work`` in its build folder, write its metrics log, curves and ``result.json``,
    drop the resume state, put the folder in place."""
    from upreid.report.figures import run_curves

    folder = build_folder(unit)
    history: list[dict[str, Any]] = []

    def on_metrics(metrics: dict[str, float], step: int) -> None:
        history.append({"step": step, **metrics})
        log_metrics(metrics, step)

    metrics = work(folder, on_metrics)
    atomic_write_json(folder / LOG, history)
    run_curves(history, folder / "curves.png")
    atomic_write_json(
        folder / RESULT,
        {
            "input_hash": unit.input_hash,
            "key": unit.key,
            "metrics": metrics,
            "commit": commit,
            "params": unit.params,  # the folder alone can re-log its MLflow run
            "tags": {k: str(v) for k, v in tags.items()},
            "artifacts": list(unit.artifacts),
            "datasets": unit.datasets,
            "model": unit.model,
        },
    )
    if unit.resume_state:
        (folder / unit.resume_state).unlink(missing_ok=True)
    _promote(unit, folder)
    return metrics


def run_unit(
    unit: Unit,
    work: Work,
    profile: str,
    tags: dict[str, Any],
    solo: bool = False,
    root: str | Path = ".",
) -> dict[str, Any]:
    """The unit's metrics: reused when done with these inputs, else computed (see the module
    docstring); every finished unit ends as a FINISHED MLflow run (rank 0)."""
    cached = done_result(unit.out, unit.input_hash)
    tags = {"input_hash": unit.input_hash, **tags, **unit.tags}
    if cached is not None:
        if not is_rank0() or tracking.find_run(profile, unit.key, unit.input_hash, root):
            log.info("%s: unchanged inputs, result reused", unit.key)
            return cached["metrics"]
        log.info("%s: unchanged inputs, result re-logged to MLflow", unit.key)
    commit = git_commit()
    if not is_rank0():
        if not solo:  # a DDP unit: rank 0 prepares the folder and writes the files
            return work(choose_folder(unit), lambda m, s: None)
        return _work_once(unit, work, lambda m, s: None, commit, tags)
    if tracking.end_killed(profile, unit.key, root):
        log.info("%s: the run a kill interrupted is marked KILLED", unit.key)
    with tracking.stage_run(
        unit.key, profile=profile, params=unit.params, tags=tags, commit=commit, root=root
    ) as run:
        run.log_datasets(unit.datasets)
        if cached is None:
            metrics = _work_once(unit, work, run.log_metrics, commit, tags)
        else:
            metrics = cached["metrics"]
            _log_history(run, unit.out)
        _log_outcome(run, unit.out, metrics, unit.artifacts, unit.model)
    return metrics


def _log_history(run: tracking.StageRun, out: Path) -> None:
    for row in json.loads((out / LOG).read_text()):
        step = row.pop("step")
        run.log_metrics(row, step)


def _log_outcome(
    run: tracking.StageRun,
    out: Path,
    metrics: dict[str, Any],
    artifacts: tuple[str, ...],
    model: str = "",
) -> None:
    step, last = _final_row(out)
    run.log_metrics(  # the run's summary; a value logged at its last step is not repeated
        {
            k: v
            for k, v in metrics.items()
            if isinstance(v, int | float) and not (k in last and last[k] == v)
        },
        step,
    )
    for name in (RESULT, LOG, "curves.png", *artifacts):
        run.log_artifact(out / name)
    if model:
        run.log_model(*embedding_model(out / model))


def embedding_model(checkpoint: Path) -> tuple[Any, Any]:
    """The embedding module of a model file (images to L2-normalised features, what retrieval
    compares) and an input example for its MLflow signature."""
    import numpy as np

    from upreid.export import EmbeddingModel
    from upreid.models.checkpoints import load_model

    loaded = load_model(checkpoint)
    example = np.random.default_rng(0).standard_normal(
        (2, 3, loaded.height, loaded.width), dtype=np.float32
    )
    return EmbeddingModel(loaded).eval(), example


def ensure_logged(folder: Path, profile: str, root: str | Path = ".") -> tuple[str, bool]:
    """The MLflow run id of the finished unit in ``folder`` (found by its key and input hash,
    or re-logged from the folder: a deleted or fresh store), and whether it was re-logged.
    Raises FileNotFoundError when the folder holds no finished run."""
    path = folder / RESULT
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no finished run ({RESULT} missing)")
    saved = json.loads(path.read_text())
    key, input_hash = saved["key"], saved["input_hash"]
    found = tracking.find_run(profile, key, input_hash, root)
    if found:
        return found, False
    log.info("%s: not in the MLflow store, re-logged from %s", key, folder)
    tags = {"input_hash": input_hash, **saved.get("tags", {})}
    with tracking.stage_run(
        key,
        profile=profile,
        params=saved.get("params", {}),
        tags=tags,
        commit=saved.get("commit", ""),
        root=root,
    ) as run:
        run.log_datasets(saved.get("datasets", {}))
        _log_history(run, folder)
        _log_outcome(
            run,
            folder,
            saved["metrics"],
            tuple(saved.get("artifacts", ())),
            saved.get("model", ""),
        )
        return run.run_id, True


def _final_row(out: Path) -> tuple[int, dict[str, Any]]:
    """The run's last logged step and every value logged at it (0 and none without a log)."""
    log_file = out / LOG
    rows = json.loads(log_file.read_text()) if log_file.is_file() else []
    if not rows:
        return 0, {}
    step = int(rows[-1]["step"])
    merged: dict[str, Any] = {}
    for row in rows:
        if int(row["step"]) == step:
            merged.update(row)
    return step, merged
