"""Step ``report``: the paper's tables and figures from the MLflow runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upreid import tracking
from upreid.experiments import FinetuneRun
from upreid.io import atomic_write_json, git_commit
from upreid.params import Params
from upreid.pipeline import Paths, runtime_of
from upreid.steps.inference import explain_checkpoints
from upreid.steps.store import current_runs, expected_folders
from upreid.units import LOG

# DVC plots (dvc.yaml `plots:`): per run, the curve of each kind of run against its x axis.
# plot -> (kind of run, fields); "frozen": pre-training's frozen-feature mAP (step 0: untrained)
PLOT_FIELDS = {
    "pretrain": ("pretrain", ("loss",)),
    "frozen": ("pretrain", ("frozen_mAP",)),
    "finetune": ("finetune", ("mAP",)),
    "spcl": ("spcl", ("mAP",)),
}


def figure8(params: Params, root: str | Path | None = None, count: int = 4) -> Path | None:
    """Figure 8 from the BoT runs on Market-1501 fine-tuned from MoCo and from UP-ReID."""
    from upreid.data.readers import read_dataset

    paths = Paths(params, root)
    ckpts = [
        paths.finetune(FinetuneRun("bot", "market1501", init, params.seed)) / "best.pt"
        for init in ("moco", "upreid")
    ]
    if not all(c.is_file() for c in ckpts):
        return None
    query = read_dataset("market1501", paths.dataset("market1501")).query
    step = max(1, len(query) // count)
    images = [Path(r.path) for r in query[::step][:count]]
    return explain_checkpoints(
        ckpts,
        images,
        paths.reports / "figures" / "figure8_explain.png",
        runtime_of(params),
        names=["BoT from MoCo", "BoT from UP-ReID"],
    )


def write_plot_data(params: Params, root: str | Path | None = None) -> int:
    """``reports/plots/<kind>/<run>.json`` for every run of these params: its ``step`` (the
    pre-training step, the fine-tuning or SpCL epoch) and curve. Returns the files written."""
    import json

    paths = Paths(params, root)
    written: set[Path] = set()
    for folder in expected_folders(params, paths):
        kind, *name = folder.relative_to(paths.runs).parts
        rows = json.loads((folder / LOG).read_text()) if (folder / LOG).is_file() else []
        for plot, (of_kind, fields) in PLOT_FIELDS.items():
            curve = [
                {"step": row["step"], **{f: row[f] for f in fields if f in row}}
                for row in rows
                if any(f in row for f in fields)
            ]
            if of_kind != kind or (plot == "frozen" and not curve):
                continue
            out = paths.reports / "plots" / plot / f"{'-'.join(name)}.json"
            atomic_write_json(out, curve)
            written.add(out)
    for kind in PLOT_FIELDS:  # files of runs these params no longer make
        for old in (paths.reports / "plots" / kind).glob("*.json"):
            if old not in written:
                old.unlink()
    return len(written)


def run_report(params: Params, root: str | Path | None = None) -> dict[str, Any]:
    """Write the paper's tables and figures to ``reports/`` from the MLflow runs."""
    from upreid.report.tables import write_reports

    paths = Paths(params, root)
    tracking.check_reachable(tracking.tracking_uri(paths.root))  # seconds, before any work
    figure8(params, root)
    summary = write_reports(params, paths.reports, current_runs(params, root), root=paths.root)
    summary["plots"] = write_plot_data(params, root)
    atomic_write_json(paths.metrics / "report.json", summary)
    with tracking.stage_run(
        "report",
        profile=params.profile,
        params={"seed": params.seed},
        tags={"params_hash": params.digest(), "seed": params.seed},
        commit=git_commit(),
        root=paths.root,
    ) as run:
        run.log_metrics(summary, 0)
        for name in ("README.md", "tables", "figures"):
            run.log_artifact(paths.reports / name, None if name == "README.md" else name)
    return summary
