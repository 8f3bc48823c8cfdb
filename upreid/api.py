"""The library in a few calls, for notebooks and scripts.

from upreid import load_model, extract_features, evaluate

model = load_model("runs/finetune/bot/market1501/upreid-s0/best.pt")   # device="auto"
feats, paths = extract_features(model, "data/synth/market1501/query")   # (N, D), N paths
metrics = evaluate(model, "data/synth/market1501", fmt="market1501")    # mAP, rank1, ...
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from upreid.runtime import Runtime, build_runtime


@dataclass
class Model:
    """A loaded model on its runtime: ``embed`` maps normalised image batches (B, 3, H, W) to
    float32 features (B, D); ``height`` x ``width`` is the input size it expects."""

    embed: Any
    height: int
    width: int
    runtime: Runtime
    method: str | None


def load_model(path: str | Path, device: str = "auto", precision: str = "fp32") -> Model:
    """A fine-tuned checkpoint (``best.pt``), an exported backbone, SpCL's ``model.pt`` or any
    file of ResNet trunk weights, read as data, on ``device``."""
    from upreid.models.checkpoints import load_model as load

    rt = build_runtime(device, precision, channels_last=True)
    loaded = load(path)
    rt.place(loaded.model)
    return Model(
        rt.embedder(loaded.model, loaded.output), loaded.height, loaded.width, rt, loaded.method
    )


def extract_features(
    model: Model, images: str | Path | list[str | Path], batch_size: int = 128, flip: bool = False
) -> tuple[Tensor, list[str]]:
    """L2-normalised features (N, D) of a folder of images (recursively) or a list of image
    files, and the paths they belong to; unreadable images are skipped."""
    from upreid.data.dataset import drop_bad_records
    from upreid.data.records import Record
    from upreid.eval.extract import extract_features as extract
    from upreid.eval.search import gallery_images

    files = gallery_images(images) if isinstance(images, str | Path) else list(images)
    records, _ = drop_bad_records([Record(str(p), -1, -1) for p in files])
    feats, _, _ = extract(model.embed, records, model.height, model.width, batch_size, flip)
    return feats.cpu(), [r.path for r in records]


def evaluate(
    model: Model,
    data: str | Path,
    fmt: str = "market1501",
    rerank: bool = False,
    **eval_values: Any,
) -> dict[str, float | int]:
    """mAP, CMC and mINP (percent) of ``model`` on the query / gallery of the dataset at
    ``data`` (layout ``fmt``) under the standard protocol: cosine distance, and with ``rerank``
    Zhong et al.'s k1 20, k2 6, lambda 0.3; ``eval_values`` set any field of
    :class:`upreid.params.EvalParams` (e.g. ``flip=True``)."""
    from upreid.data.readers import read_dataset
    from upreid.eval.evaluate import evaluate as run
    from upreid.params import EvalParams

    params = EvalParams(
        metric="cosine",
        rerank=rerank,
        rerank_k1=20,
        rerank_k2=6,
        rerank_lambda=0.3,
        flip=False,
        batch_size=128,
        chunk=512,
    )
    params = replace(params, **eval_values)
    with torch.no_grad():
        return run(
            model.embed,
            read_dataset(fmt, data),
            params,
            model.height,
            model.width,
            device=model.runtime.device,
        )
