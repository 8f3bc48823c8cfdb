"""Supervised fine-tuning of BoT, MGN, BDB and PCB from any initialisation, resumable.

Every ``checkpoint_every`` epochs ``out/last.pt`` (model, optimizer, scheduler, RNG, epoch) is
written atomically; a restarted run resumes from it. A finished run writes no ``last.pt`` (there
is nothing left to resume; its product is ``best.pt`` and ``history.json``). Evaluation every
``eval_every`` epochs gives the convergence curves (Figures 4-6); the best evaluation's weights
go to ``out/best.pt``, written with the next checkpoint or at the end, so that ``best.pt`` on
disk always matches the ``best`` a ``last.pt`` records.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from upreid.data.dataset import ImageDataset, collate, drop_bad_records
from upreid.data.images import ImageCache
from upreid.data.records import ReIDData, relabel
from upreid.data.samplers import PKSampler
from upreid.data.transforms import train_transform
from upreid.io import atomic_write_json
from upreid.losses.reid import reid_loss
from upreid.models.checkpoints import load_model
from upreid.models.init import initialise_backbone
from upreid.models.reid import build_reid_model
from upreid.params import EvalParams, MethodParams, to_dict
from upreid.runtime import CPU, Runtime
from upreid.train.checkpoint import seed_everything
from upreid.train.loop import (
    EVAL_KEYS,
    BestWeights,
    MetricsFn,
    NonFiniteLoss,
    Trainer,
    decay_groups,
    rate,
)

__all__ = [
    "EVAL_KEYS",
    "NonFiniteLoss",
    "build_model",
    "embedder",
    "finetune",
    "load_finetuned",
    "warmup_multistep",
]
log = logging.getLogger(__name__)


def warmup_multistep(epoch: int, warmup: int, milestones: tuple[int, ...], gamma: float) -> float:
    """BoT's schedule factor: linear warm-up from 0.1 over ``warmup`` epochs, then x``gamma`` at
    each milestone."""
    decay = gamma ** sum(epoch >= m for m in milestones)
    if epoch < warmup:
        return decay * (0.1 + 0.9 * epoch / warmup)
    return decay


def embedder(model: nn.Module, runtime: Runtime | None = None) -> Callable[[Tensor], Tensor]:
    """The test feature of a re-ID model (eval mode) on ``runtime``'s device:
    ``(B, 3, H, W) -> (B, E)`` float32 (the CPU in fp32 when no runtime is given)."""
    rt = runtime or Runtime(next(model.parameters()).device)
    return rt.embedder(model, lambda out: out.embedding)


def build_model(
    method: str, arch: str, num_classes: int, init: str, weights: str | None
) -> nn.Module:
    """``method``'s model with its backbone initialised from ``init`` (scratch, insup, moco,
    upreid) and the branches copied from it."""
    model = build_reid_model(method, arch, num_classes)
    initialise_backbone(model.backbone, init, weights)
    model.init_branches()
    return model


def load_finetuned(path: str | Path) -> tuple[nn.Module, str, int, int]:
    """``(model, method, height, width)`` from ``best.pt`` / ``last.pt``, on the CPU."""
    loaded = load_model(path)
    if loaded.method is None:
        raise ValueError(f"{path}: not a fine-tuned checkpoint (no method recorded)")
    return loaded.model, loaded.method, loaded.height, loaded.width


def finetune(
    method: str,
    mp: MethodParams,
    arch: str,
    data: ReIDData,
    init: str,
    weights: str | None,
    out: str | Path,
    eval_params: EvalParams,
    seed: int,
    runtime: Runtime | None = None,
    workers: int = 0,
    on_metrics: MetricsFn | None = None,
    checkpoint_every: int = 1,
    image_cache_mb: float = 0,
) -> dict[str, Any]:
    """Fine-tune ``method`` on ``data.train`` on ``runtime``'s device; evaluate on
    query/gallery; return the final and best metrics (percent). ``checkpoint_every`` epochs the
    run is resumable (``last.pt``); ``image_cache_mb`` keeps decoded images in memory."""
    from upreid.eval.evaluate import evaluate

    out, rt = Path(out), runtime or CPU
    cache = ImageCache(image_cache_mb) if image_cache_mb else None
    good, bad = drop_bad_records(data.train, cache)
    train, num_classes = relabel(good)
    seed_everything(seed)
    model = rt.place(build_model(method, arch, num_classes, init, weights))
    sampler = PKSampler([r.pid for r in train], mp.p, mp.k, seed)
    loader = DataLoader(
        ImageDataset(train, train_transform(mp.height, mp.width), cache),
        batch_size=mp.p * mp.k,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
        pin_memory=rt.device.type == "cuda",
    )
    opt = torch.optim.Adam(
        decay_groups(model, mp.weight_decay), lr=mp.lr, fused=rt.device.type == "cuda"
    )
    sched = LambdaLR(opt, lambda e: warmup_multistep(e, mp.warmup_epochs, mp.milestones, mp.gamma))
    meta = {
        "method": method,
        "arch": arch,
        "num_classes": num_classes,
        "height": mp.height,
        "width": mp.width,
        "init": init,
        "params": to_dict(mp),
        "seed": seed,
    }
    trainer = Trainer(
        f"finetune {method}",
        rt,
        out / "last.pt",
        {"model": model, "optimizer": opt, "scheduler": sched},
        meta,
        mp.epochs * len(loader),
        "it",
        on_metrics,
    )
    trainer.resume()

    def train_epoch(epoch: int) -> dict[str, float]:
        sampler.set_epoch(epoch)
        row = _train_epoch(model, loader, opt, mp, trainer, epoch)
        sched.step()
        return row

    def evaluate_now() -> dict[str, float]:
        metrics = evaluate(
            embedder(model, rt),
            data,
            eval_params,
            mp.height,
            mp.width,
            workers=workers,
            cache=cache,
            device=rt.device,
        )
        return {k: float(metrics[k]) for k in EVAL_KEYS}

    start = time.perf_counter()
    state = trainer.fit(
        mp.epochs,
        train_epoch,
        evaluate_now,
        mp.eval_every,
        checkpoint_every,
        best=BestWeights(out / "best.pt", meta),
        best_of=model,
    )
    atomic_write_json(out / "history.json", state.history)
    final = next(h for h in reversed(state.history) if "mAP" in h)
    if cache is not None:
        log.info(
            "image cache: %d images, %.0f MB, %d hits, %d misses",
            len(cache),
            cache.used / 2**20,
            cache.hits,
            cache.misses,
        )
    return {
        **{k: final[k] for k in EVAL_KEYS},
        **{f"best_{k}": v for k, v in state.best.items()},
        "epochs": mp.epochs,
        "train_images": len(train),
        "identities": num_classes,
        "skipped_images": len(bad),
        "wall_s": time.perf_counter() - start,
        "images_per_s": statistics.median(h["images_per_s"] for h in state.history),
    }


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    opt: torch.optim.Optimizer,
    mp: MethodParams,
    trainer: Trainer,
    epoch: int,
) -> dict[str, float]:
    rt = trainer.runtime
    model.train()
    sums = {"loss": 0.0, "ce": 0.0, "triplet": 0.0}
    images, start = 0, time.perf_counter()
    for x, pids, *_ in loader:
        with rt.autocast():
            out = model(rt.images(x))
        loss, parts = reid_loss(out, pids.to(rt.device), mp.label_smoothing, mp.margin)
        trainer.optimize(loss, opt)
        sums["loss"] += float(loss.detach())
        for k in ("ce", "triplet"):
            sums[k] += float(parts[k])
        images += len(x)
        trainer.progress.update(epoch=epoch + 1, loss=float(loss.detach()))
    steps = max(1, len(loader))
    return {
        **{k: v / steps for k, v in sums.items()},
        "lr": opt.param_groups[0]["lr"],
        "images_per_s": rate(images, start),
    }
