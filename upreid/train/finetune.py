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
from torch.utils.data import DataLoader

from upreid.data.dataset import ImageDataset, collate, drop_bad_records
from upreid.data.images import ImageCache
from upreid.data.records import ReIDData, relabel
from upreid.data.samplers import PKSampler
from upreid.data.transforms import train_transform
from upreid.io import atomic_torch_save, atomic_write_json, git_commit
from upreid.losses.reid import reid_loss
from upreid.models.init import initialise_backbone
from upreid.models.reid import build_reid_model
from upreid.params import EvalParams, MethodParams, to_dict
from upreid.progress import Progress
from upreid.train.checkpoint import load_checkpoint, save_checkpoint, seed_everything, set_rng_state
from upreid.train.optim import Adam, LambdaSchedule

log = logging.getLogger(__name__)
MetricsFn = Callable[[dict[str, float], int], None]
EVAL_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


class NonFiniteLoss(RuntimeError):
    """The fine-tuning loss became NaN or infinite."""


def warmup_multistep(epoch: int, warmup: int, milestones: tuple[int, ...], gamma: float) -> float:
    """BoT's schedule factor: linear warm-up from 0.1 over ``warmup`` epochs, then x``gamma`` at
    each milestone."""
    decay = gamma ** sum(epoch >= m for m in milestones)
    if epoch < warmup:
        return decay * (0.1 + 0.9 * epoch / warmup)
    return decay


def embedder(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """The test feature of a re-ID model (eval mode): ``(B, 3, H, W) -> (B, E)``."""
    model.eval()

    def embed(x: Tensor) -> Tensor:
        return model(x).embedding

    return embed


def build_model(method: str, arch: str, num_classes: int, init: str, weights: str | None
                ) -> nn.Module:
    """``method``'s model with its backbone initialised from ``init`` (scratch, insup, moco,
    upreid) and the branches copied from it."""
    model = build_reid_model(method, arch, num_classes)
    initialise_backbone(model.backbone, init, weights)
    model.init_branches()
    return model


def load_finetuned(path: str | Path) -> tuple[nn.Module, str, int, int]:
    """``(model, method, height, width)`` from ``best.pt`` / ``last.pt``."""
    blob = load_checkpoint(path)
    model = build_reid_model(blob["method"], blob["arch"], blob["num_classes"])
    model.init_branches()
    model.load_state_dict(blob["model"])
    model.eval()
    return model, blob["method"], blob["height"], blob["width"]


def _evaluate(model: nn.Module, data: ReIDData, eval_params: EvalParams, mp: MethodParams,
              workers: int, cache: ImageCache | None = None) -> dict[str, float]:
    from upreid.eval.evaluate import evaluate

    with torch.random.fork_rng():  # evaluation leaves the training RNG stream untouched
        metrics = evaluate(embedder(model), data, eval_params, mp.height, mp.width,
                           workers=workers, cache=cache)
    model.train()
    return {k: float(metrics[k]) for k in EVAL_KEYS}


def finetune(method: str, mp: MethodParams, arch: str, data: ReIDData, init: str,
             weights: str | None, out: str | Path, eval_params: EvalParams, seed: int,
             workers: int = 0, channels_last: bool = False,
             on_metrics: MetricsFn | None = None, checkpoint_every: int = 1,
             image_cache_mb: float = 0) -> dict[str, Any]:
    """Fine-tune ``method`` on ``data.train``; evaluate on query/gallery; return the final and
    best metrics (percent). ``checkpoint_every`` epochs the run is resumable (``last.pt``);
    ``image_cache_mb`` keeps decoded images in memory (:class:`ImageCache`)."""
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 epoch, got {checkpoint_every}")
    out = Path(out)
    cache = ImageCache(image_cache_mb) if image_cache_mb else None
    train, bad = drop_bad_records(data.train, cache)
    train, num_classes = relabel(train)
    seed_everything(seed)
    model = build_model(method, arch, num_classes, init, weights)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    sampler = PKSampler([r.pid for r in train], mp.p, mp.k, seed)
    loader = DataLoader(ImageDataset(train, train_transform(mp.height, mp.width), cache),
                        batch_size=mp.p * mp.k, sampler=sampler, num_workers=workers,
                        collate_fn=collate, drop_last=True)
    opt = Adam([p for p in model.parameters() if p.requires_grad], lr=mp.lr,
               weight_decay=mp.weight_decay)
    sched = LambdaSchedule(
        opt, lambda e: warmup_multistep(e, mp.warmup_epochs, mp.milestones, mp.gamma))
    meta = {"method": method, "arch": arch, "num_classes": num_classes, "height": mp.height,
            "width": mp.width, "init": init}
    state = _resume(out / "last.pt", model, opt, sched)
    best = _BestWeights(out / "best.pt", meta, mp)
    progress = Progress(mp.epochs * len(loader), f"finetune {method}", unit="it", every=30)
    progress.done = state["epoch"] * len(loader)
    start = time.perf_counter()
    for epoch in range(state["epoch"], mp.epochs):
        sampler.set_epoch(epoch)
        row = _train_epoch(model, loader, opt, mp, fmt, progress, epoch)
        sched.step()
        if (epoch + 1) % mp.eval_every == 0 or epoch + 1 == mp.epochs:
            row.update(_evaluate(model, data, eval_params, mp, workers, cache))
            state["history"].append({"epoch": epoch + 1, **row})
            if row["mAP"] > state["best"].get("mAP", -1.0):
                state["best"] = {"epoch": epoch + 1, **{k: row[k] for k in EVAL_KEYS}}
                best.keep(model, epoch + 1, row)
        if on_metrics is not None:
            on_metrics(row, epoch + 1)
        if epoch + 1 == mp.epochs:
            best.write()
        elif (epoch + 1) % checkpoint_every == 0:
            best.write()  # before last.pt: a resumed run's best is the one on disk
            save_checkpoint(out / "last.pt", params=to_dict(mp), epoch=epoch + 1,
                            step=epoch + 1, model=model.state_dict(),
                            optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                            history=state["history"], best=state["best"], **meta)
    atomic_write_json(out / "history.json", state["history"])
    final = state["history"][-1]
    if cache is not None:
        log.info("image cache: %d images, %.0f MB, %d hits, %d misses", len(cache),
                 cache.used / 2**20, cache.hits, cache.misses)
    return {**{k: final[k] for k in EVAL_KEYS},
            **{f"best_{k}": v for k, v in state["best"].items()},
            "epochs": mp.epochs, "train_images": len(train), "identities": num_classes,
            "skipped_images": len(bad), "wall_s": time.perf_counter() - start,
            "images_per_s": statistics.median(h["images_per_s"] for h in state["history"])}


class _BestWeights:
    """The best evaluation's weights: kept in memory when found, written to ``best.pt`` with the
    next checkpoint or at the end (one write where there were several)."""

    def __init__(self, path: Path, meta: dict[str, Any], mp: MethodParams) -> None:
        self.path, self.meta, self.mp = path, meta, mp
        self.pending: dict[str, Any] | None = None

    def keep(self, model: nn.Module, epoch: int, row: dict[str, float]) -> None:
        weights = model.state_dict()  # a copy of each tensor; the dict keeps its metadata
        for key, value in weights.items():
            weights[key] = value.detach().clone()
        self.pending = {**self.meta, "model": weights, "epoch": epoch, "metrics": dict(row),
                        "params": to_dict(self.mp)}

    def write(self) -> None:
        if self.pending is not None:
            atomic_torch_save(self.path, {**self.pending, "commit": git_commit()})
            self.pending = None


def _resume(path: Path, model: nn.Module, opt: Adam, sched: LambdaSchedule) -> dict[str, Any]:
    if not path.is_file():
        return {"epoch": 0, "history": [], "best": {}}
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    log.info("resuming fine-tuning from %s at epoch %d", path, ckpt["epoch"])
    return {"epoch": ckpt["epoch"], "history": ckpt["history"], "best": ckpt["best"]}


def _train_epoch(model: nn.Module, loader: DataLoader, opt: Adam,
                 mp: MethodParams, fmt: torch.memory_format, progress: Progress,
                 epoch: int) -> dict[str, float]:
    model.train()
    sums = {"loss": 0.0, "ce": 0.0, "triplet": 0.0}
    images, start = 0, time.perf_counter()
    for x, pids, *_ in loader:
        out = model(x.contiguous(memory_format=fmt))
        loss, parts = reid_loss(out, pids, mp.label_smoothing, mp.margin)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"fine-tuning loss is {loss.item()} in epoch {epoch}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums["loss"] += float(loss.detach())
        for k in ("ce", "triplet"):
            sums[k] += float(parts[k])
        images += len(x)
        progress.update(epoch=epoch + 1, loss=float(loss.detach()))
    steps = max(1, len(loader))
    return {**{k: v / steps for k, v in sums.items()}, "lr": opt.param_groups[0]["lr"],
            "images_per_s": images / (time.perf_counter() - start)}
