"""Using a trained model: evaluate it on a dataset, search a gallery, explain (Figure 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upreid.io import atomic_write_json
from upreid.models.checkpoints import load_model
from upreid.params import Params
from upreid.pipeline import runtime_of
from upreid.runtime import Runtime


def load_embedder(checkpoint: str | Path, runtime: Runtime) -> tuple[Any, int, int]:
    """``(embed, height, width)`` for a fine-tuned checkpoint (best.pt / last.pt) or a file of
    trunk weights (pooled features), computing on ``runtime``'s device."""
    loaded = load_model(checkpoint)
    runtime.place(loaded.model)
    return runtime.embedder(loaded.model, loaded.output), loaded.height, loaded.width


def evaluate_checkpoint(
    params: Params, checkpoint: str | Path, data_path: str | Path, fmt: str, out: str | Path
) -> dict[str, Any]:
    """Metrics of a checkpoint on a dataset, written to ``out/metrics.json`` with a picture of
    ranked lists in ``out/ranks.png``."""
    from upreid.data.readers import read_dataset
    from upreid.eval.evaluate import evaluate_with_distances
    from upreid.eval.visualize import ranked_list_png

    data = read_dataset(fmt, data_path)
    rt = runtime_of(params)
    embed, height, width = load_embedder(checkpoint, rt)
    metrics, distmat, query, gallery = evaluate_with_distances(
        embed, data, params.eval, height, width, device=rt.device
    )
    out = Path(out)
    atomic_write_json(
        out / "metrics.json", {"checkpoint": str(checkpoint), "data": str(data_path), **metrics}
    )
    ranked_list_png(distmat, query, gallery, out / "ranks.png")
    return metrics


def explain_checkpoints(
    checkpoints: list[Path],
    images: list[Path],
    out: Path,
    runtime: Runtime,
    names: list[str] | None = None,
) -> Path:
    """Figure 8: response maps of each checkpoint side by side."""
    from upreid.report.explain import explain_png

    names = names or [f"{Path(c).parent.name}/{Path(c).name}" for c in checkpoints]
    models = {}
    for name, path in zip(names, checkpoints, strict=True):
        loaded = load_model(path)
        models[name] = (runtime.place(loaded.trunk), loaded.height, loaded.width)
    return explain_png(models, images, out)


def search_gallery(
    params: Params, checkpoint: str | Path, query: str | Path, gallery: str | Path, topk: int
) -> list[tuple[str, float]]:
    """The ``topk`` gallery images nearest to ``query``."""
    from upreid.eval.search import search

    rt = runtime_of(params)
    embed, height, width = load_embedder(checkpoint, rt)
    return search(embed, query, gallery, height, width, topk, device=rt.device)
