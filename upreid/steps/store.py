"""Step ``store``: the runs of the current inputs in MLflow, derived from the run folders.

A finished run folder's ``result.json`` is the record that a unit is done with given inputs;
the MLflow run is derived from it, found by key and input hash or re-logged from the folder.
"""

from __future__ import annotations

from pathlib import Path

from upreid import tracking
from upreid.experiments import FINETUNE_CELLS, SPCL_SETTINGS, finetune_runs, needed_variants
from upreid.params import Params
from upreid.pipeline import Paths
from upreid.units import RESULT, ensure_logged


class MissingRunsError(RuntimeError):
    """Runs the tables need are not done."""


def expected_folders(params: Params, paths: Paths) -> list[Path]:
    """The run folder of every unit the stages make with these params (what the tables read)."""
    folders = [paths.pretrain(v) for v in needed_variants(params)]
    for method, dataset in FINETUNE_CELLS:
        folders += [paths.finetune(run) for run in finetune_runs(params, method, dataset)]
    for setting in SPCL_SETTINGS:
        folders += [paths.spcl(setting, init) for init in params.pipeline.inits]
    return folders


def sync_store(params: Params, root: str | Path | None = None) -> dict[str, int]:
    """Every finished run folder of these params has its MLflow run (key and input hash);
    the missing ones are re-logged from their folders (a deleted or fresh store)."""
    paths = Paths(params, root)
    done = [f for f in expected_folders(params, paths) if (f / RESULT).is_file()]
    relogged = sum(ensure_logged(f, params.profile, paths.root)[1] for f in done)
    return {"runs": len(done), "relogged": relogged}


def current_runs(params: Params, root: str | Path | None = None) -> dict[str, tracking.RunRecord]:
    """The MLflow run of each unit of these params, and no other (re-logged from its folder
    when the store lacks it). DVC runs the report only after every stage before it succeeded
    with the current inputs; run by hand earlier, a missing run is an error naming it."""
    paths = Paths(params, root)
    folders = expected_folders(params, paths)
    missing = [f for f in folders if not (f / RESULT).is_file()]
    if missing:
        names = ", ".join(str(f.relative_to(paths.root)) for f in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MissingRunsError(
            f"{len(missing)} runs the tables need are not done ({names}{more}); "
            "run `dvc repro` (or the stages that make them) first"
        )
    ids = [ensure_logged(f, params.profile, paths.root)[0] for f in folders]
    return tracking.run_records(ids, paths.root)
