"""SpCL (Ge et al. 2020): self-paced contrastive learning with a hybrid memory, fully
unsupervised on a target (M) or with a labeled source (P->M).

Each epoch clusters the target part of the memory (DBSCAN on the Jaccard distance of k-reciprocal
neighbours) with the self-paced reliability criterion; unreliable points and outliers stay
instances. Source samples keep their ground-truth identities. Every ``checkpoint_every`` epochs
``out/last.pt`` (model, memory, optimizer, RNG, thresholds) is written atomically, so a restarted
run resumes; the end writes the adapted weights to ``out/model.pt`` (and no ``last.pt``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from upreid.cluster import jaccard_distance, self_paced_labels
from upreid.data.dataset import ImageDataset, collate, drop_bad_records
from upreid.data.images import ImageCache
from upreid.data.records import Record, ReIDData, relabel
from upreid.data.samplers import PKSampler
from upreid.data.transforms import train_transform
from upreid.io import atomic_torch_save, atomic_write_json, git_commit
from upreid.models.backbone import FEATURE_DIMS, build_backbone
from upreid.models.init import initialise_backbone
from upreid.models.memory import HybridMemory
from upreid.params import EvalParams, SpclParams, to_dict
from upreid.runtime import CPU, Runtime, full_precision
from upreid.train.checkpoint import seed_everything
from upreid.train.loop import (
    EVAL_KEYS,
    MetricsFn,
    Trainer,
    TrainState,
    decay_groups,
    rate,
)

log = logging.getLogger(__name__)


class SpCLNet(nn.Module):
    """SpCL's encoder: trunk (last stride 1), GAP, BN, L2 normalisation. ``(B,3,H,W) -> (B,C)``."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.backbone = build_backbone(arch, last_stride=1)
        self.bn = nn.BatchNorm1d(FEATURE_DIMS[arch])
        self.bn.bias.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return _head(self.bn, self.backbone(x).mean(dim=(2, 3)))


@full_precision
def _head(bn: nn.Module, pooled: Tensor) -> Tensor:
    """BN and L2 normalisation in float32 under any autocast: (B, C) -> (B, C)."""
    return F.normalize(bn(pooled), dim=1)


def _batches(
    records: Sequence[Record],
    labels: Sequence[int],
    sp: SpclParams,
    seed: int,
    epoch: int,
    workers: int,
    cache: ImageCache | None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless ``(images, memory indices)`` batches of ``batch_size / k`` (pseudo) identities."""
    # few (pseudo) identities early on, e.g. everything in one cluster: fewer per batch
    p = max(1, min(sp.batch_size // sp.k, len({v for v in labels if v >= 0})))
    sampler = PKSampler(labels, p, sp.k, seed)
    sampler.set_epoch(epoch)
    loader = DataLoader(
        ImageDataset(records, train_transform(sp.height, sp.width), cache),
        batch_size=p * sp.k,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
    )
    for round_ in itertools.count():
        sampler.set_epoch(epoch * 1000 + round_)
        for x, _pids, _cams, idx in loader:
            yield x, idx


@torch.no_grad()
def _features(
    model: nn.Module,
    records: Sequence[Record],
    sp: SpclParams,
    batch_size: int,
    workers: int,
    cache: ImageCache | None,
    rt: Runtime,
) -> Tensor:
    """(N, C) L2-normalised features of ``records`` on the runtime's device."""
    from upreid.eval.extract import extract_features

    feats, _, _ = extract_features(
        rt.embedder(model),
        records,
        sp.height,
        sp.width,
        batch_size=batch_size,
        workers=workers,
        desc="spcl features",
        cache=cache,
    )
    model.train()
    return feats.to(rt.device)


def adapt(
    sp: SpclParams,
    arch: str,
    target: ReIDData,
    source: ReIDData | None,
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
    """SpCL on ``target.train`` (with ``source.train`` labels when given) on ``runtime``'s
    device; evaluate on target query/gallery every ``eval_every`` epochs; return final and best
    metrics (percent). ``checkpoint_every`` epochs the run is resumable; ``image_cache_mb``
    keeps decoded images in memory (:class:`ImageCache`)."""
    from upreid.eval.evaluate import evaluate

    out, rt = Path(out), runtime or CPU
    cache = ImageCache(image_cache_mb) if image_cache_mb else None
    seed_everything(seed)
    tgt, _ = drop_bad_records(target.train, cache)
    src, src_classes = relabel(drop_bad_records(source.train, cache)[0]) if source else ((), 0)
    model = SpCLNet(arch)
    initialise_backbone(model.backbone, init, weights)
    model = rt.place(model)
    memory = HybridMemory(
        FEATURE_DIMS[arch], len(src) + len(tgt), sp.temperature, sp.memory_momentum
    ).to(rt.device)
    opt = torch.optim.Adam(
        decay_groups(model, sp.weight_decay), lr=sp.lr, fused=rt.device.type == "cuda"
    )
    meta = {
        "arch": arch,
        "height": sp.height,
        "width": sp.width,
        "init": init,
        "params": to_dict(sp),
        "seed": seed,
    }
    trainer = Trainer(
        "spcl",
        rt,
        out / "last.pt",
        {"model": model, "memory": memory, "optimizer": opt},
        meta,
        sp.epochs * sp.iters_per_epoch,
        "it",
        on_metrics,
    )

    def evaluate_now() -> dict[str, float]:
        metrics = evaluate(
            rt.embedder(model),
            target,
            eval_params,
            sp.height,
            sp.width,
            workers=workers,
            cache=cache,
            device=rt.device,
        )
        return {k: float(metrics[k]) for k in EVAL_KEYS}

    state = trainer.state
    if not trainer.resume():
        state.extra = {"indep": None, "initial": trainer.evaluate(evaluate_now)}
        log.info(
            "spcl: before adaptation mAP %.1f rank-1 %.1f",
            state.extra["initial"]["mAP"],
            state.extra["initial"]["rank1"],
        )
        memory.features.copy_(
            _features(model, [*src, *tgt], sp, eval_params.batch_size, workers, cache, rt)
        )
        memory.labels[: len(src)] = torch.tensor([r.pid for r in src], dtype=torch.long)
    state = trainer.state

    def train_epoch(epoch: int) -> dict[str, float]:
        labels, stats = _recluster(memory, len(src), src_classes, sp, trainer.state)
        return {
            **stats,
            **_train_epoch(
                model, memory, opt, src, tgt, labels, sp, seed, epoch, workers, trainer, cache
            ),
        }

    start = time.perf_counter()
    state = trainer.fit(sp.epochs, train_epoch, evaluate_now, sp.eval_every, checkpoint_every)
    atomic_write_json(out / "history.json", state.history)
    weights_out = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        out / "model.pt",
        {"model": weights_out, **meta, "epoch": state.epoch, "commit": git_commit()},
    )
    final = next(h for h in reversed(state.history) if "mAP" in h)
    return {
        **{k: final[k] for k in EVAL_KEYS},
        **{f"best_{k}": v for k, v in state.best.items()},
        **{f"init_{k}": v for k, v in state.extra["initial"].items()},
        "clusters": final["clusters"],
        "outliers": final["outliers"],
        "epochs": sp.epochs,
        "source_images": len(src),
        "target_images": len(tgt),
        "wall_s": time.perf_counter() - start,
    }


def _recluster(
    memory: HybridMemory, num_src: int, src_classes: int, sp: SpclParams, state: TrainState
) -> tuple[list[int], dict[str, float]]:
    """Pseudo labels of the target entries (offset after the source identities)."""
    dist = jaccard_distance(memory.features[num_src:], sp.k1, sp.k2, device=memory.features.device)
    labels, stats = self_paced_labels(
        dist, sp.eps, sp.eps_gap, sp.min_samples, state.extra["indep"]
    )
    if state.extra["indep"] is None and stats["indep_threshold"] == stats["indep_threshold"]:
        state.extra["indep"] = float(stats["indep_threshold"])  # the first epoch's, not NaN
    memory.labels[num_src:] = (
        torch.as_tensor(labels, dtype=torch.long, device=memory.labels.device) + src_classes
    )
    log.info("spcl: %d clusters, %d un-clustered instances", stats["clusters"], stats["outliers"])
    return [int(v) for v in labels], {
        "clusters": float(stats["clusters"]),
        "outliers": float(stats["outliers"]),
    }


def _train_epoch(
    model: nn.Module,
    memory: HybridMemory,
    opt: torch.optim.Optimizer,
    src: Sequence[Record],
    tgt: Sequence[Record],
    labels: list[int],
    sp: SpclParams,
    seed: int,
    epoch: int,
    workers: int,
    trainer: Trainer,
    cache: ImageCache | None,
) -> dict[str, float]:
    rt = trainer.runtime
    model.train()
    tgt_batches = _batches(tgt, labels, sp, seed, epoch, workers, cache)
    src_batches = (
        _batches(src, [r.pid for r in src], sp, seed + 1, epoch, workers, cache) if src else None
    )
    total, images, start = 0.0, 0, time.perf_counter()
    for _ in range(sp.iters_per_epoch):
        x, idx = next(tgt_batches)
        idx = idx + len(src)
        if src_batches is not None:
            xs, idx_s = next(src_batches)
            x, idx = torch.cat([xs, x]), torch.cat([idx_s, idx])
        idx = idx.to(rt.device)
        with rt.autocast():
            feats = model(rt.images(x))
        loss = memory(feats, idx)
        trainer.optimize(loss, opt)
        memory.update(feats.detach().float(), idx)
        total += float(loss.detach())
        images += len(x)
        trainer.progress.update(epoch=epoch + 1, loss=float(loss.detach()))
    return {"loss": total / sp.iters_per_epoch, "images_per_s": rate(images, start)}
