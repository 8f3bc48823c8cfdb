"""Figures 4-6 (mAP against fine-tuning epoch per initialisation) and Figure 7 (patch loss
against pre-training step per positive scheme), from MLflow metric histories."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: no global figure state

from upreid import tracking
from upreid.experiments import CURVES
from upreid.report.runs import Runs

LABELS = {
    "scratch": "Scratch",
    "insup": "INSUP",
    "moco": "Moco",
    "upreid": "UP-ReID",
    "cc": "Baseline w CC",
    "icc": "Baseline w ICC",
    "random": "random positive",
    "online": "online positive",
}
PATCH_LOSS = "loss_patch"


def _history(runs: Runs, prefix: str, metric: str, root: str | Path) -> list[tuple[int, float]]:
    ids = runs.ids(prefix)
    return tracking.metric_history(ids[0], metric, root) if ids else []


def write_curves(runs: Runs, folder: Path, seed: int = 0, root: str | Path = ".") -> list[str]:
    """Write every figure whose runs exist (fine-tune seed ``seed``, the runs
    :func:`~upreid.experiments.drawn` names); return their paths relative to ``reports/``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (method, datasets, inits) in CURVES.items():
        fig = Figure(figsize=(4 * len(datasets), 3.2))
        axes = fig.subplots(1, len(datasets), squeeze=False)
        for ax, dataset in zip(axes[0], datasets, strict=False):
            for init in inits:
                points = _history(runs, f"finetune/{method}/{dataset}/{init}/s{seed}", "mAP", root)
                if points:
                    ax.plot(*zip(*points, strict=False), marker="o", label=LABELS[init])
            ax.set(
                title=f"{method.upper()} {dataset}", xlabel="fine-tuning epoch", ylabel="mAP (%)"
            )
            _finish(ax)
        written.append(_save(fig, folder / f"{name}.png"))
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for variant in ("upreid", "random", "online"):
        points = _history(runs, f"pretrain/{variant}", PATCH_LOSS, root)
        if points:
            label = "symmetric positive" if variant == "upreid" else LABELS[variant]
            ax.plot(*zip(*points, strict=False), label=label)
    ax.set(title="Figure 7: patch contrast loss", xlabel="pre-training step", ylabel="loss")
    _finish(ax)
    written.append(_save(fig, folder / "figure7_positive_schemes.png"))
    return [str(Path("figures") / "curves" / Path(w).name) for w in written]


def _finish(ax: Axes) -> None:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "runs absent", ha="center", va="center", transform=ax.transAxes)


def _save(fig: Figure, path: Path) -> str:
    tmp = path.with_suffix(".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return str(path)


def run_curves(history: list[dict[str, float]], path: Path) -> str:
    """One run's logged curves (losses; mAP and rank-1 when evaluated) against its step, for
    the run's MLflow artifacts. ``history``: rows of ``{"step": ..., metric: value}``."""
    losses = sorted({k for row in history for k in row if k.startswith("loss")})
    scores = [k for k in ("mAP", "rank1") if any(k in row for row in history)]
    panels = [p for p in (losses, scores) if p]
    fig = Figure(figsize=(4.5 * max(len(panels), 1), 3.2))
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)
    for ax, keys in zip(axes[0], panels, strict=False):
        for key in keys:
            points = [(row["step"], row[key]) for row in history if key in row]
            ax.plot(
                *zip(*points, strict=False), marker="o" if len(points) < 30 else None, label=key
            )
        ax.set(
            xlabel="step (epoch for fine-tuning and SpCL)", ylabel="loss" if keys is losses else "%"
        )
        _finish(ax)
    if not panels:
        _finish(axes[0][0])
    return _save(fig, path)
