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
from collections.abc import Callable, Iterator, Sequence
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
from upreid.progress import Progress
from upreid.train.checkpoint import load_checkpoint, save_checkpoint, seed_everything, set_rng_state
from upreid.train.optim import Adam

log = logging.getLogger(__name__)
MetricsFn = Callable[[dict[str, float], int], None]
EVAL_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


class SpCLNet(nn.Module):
    """SpCL's encoder: trunk (last stride 1), GAP, BN, L2 normalisation. ``(B,3,H,W) -> (B,C)``."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.backbone = build_backbone(arch, last_stride=1)
        self.bn = nn.BatchNorm1d(FEATURE_DIMS[arch])
        self.bn.bias.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.bn(self.backbone(x).mean(dim=(2, 3))), dim=1)


def _batches(records: Sequence[Record], labels: Sequence[int], sp: SpclParams, seed: int,
             epoch: int, workers: int, cache: ImageCache | None
             ) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless ``(images, memory indices)`` batches of ``batch_size / k`` (pseudo) identities."""
    # few (pseudo) identities early on, e.g. everything in one cluster: fewer per batch
    p = max(1, min(sp.batch_size // sp.k, len({v for v in labels if v >= 0})))
    sampler = PKSampler(labels, p, sp.k, seed)
    sampler.set_epoch(epoch)
    loader = DataLoader(ImageDataset(records, train_transform(sp.height, sp.width), cache),
                        batch_size=p * sp.k, sampler=sampler, num_workers=workers,
                        collate_fn=collate, drop_last=True)
    for round_ in itertools.count():
        sampler.set_epoch(epoch * 1000 + round_)
        for x, _pids, _cams, idx in loader:
            yield x, idx


@torch.no_grad()
def _features(model: nn.Module, records: Sequence[Record], sp: SpclParams, batch_size: int,
              workers: int, cache: ImageCache | None) -> Tensor:
    from upreid.eval.extract import extract_features

    model.eval()
    feats, _, _ = extract_features(model, records, sp.height, sp.width, batch_size=batch_size,
                                   workers=workers, desc="spcl features", cache=cache)
    model.train()
    return feats


class _Run:
    """The state a run carries from epoch to epoch (and through a checkpoint)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.indep: float | None = None
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] = {}
        self.initial: dict[str, float] = {}  # the init's metrics before any adaptation


def adapt(sp: SpclParams, arch: str, target: ReIDData, source: ReIDData | None, init: str,
          weights: str | None, out: str | Path, eval_params: EvalParams, seed: int,
          workers: int = 0, on_metrics: MetricsFn | None = None, checkpoint_every: int = 1,
          image_cache_mb: float = 0) -> dict[str, Any]:
    """SpCL on ``target.train`` (with ``source.train`` labels when given); evaluate on target
    query/gallery every ``eval_every`` epochs; return final and best metrics (percent).
    ``checkpoint_every`` epochs the run is resumable; ``image_cache_mb`` keeps decoded images
    in memory (:class:`ImageCache`)."""
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 epoch, got {checkpoint_every}")
    out = Path(out)
    cache = ImageCache(image_cache_mb) if image_cache_mb else None
    seed_everything(seed)
    tgt, _ = drop_bad_records(target.train, cache)
    src, src_classes = (relabel(drop_bad_records(source.train, cache)[0]) if source
                        else ((), 0))
    model = SpCLNet(arch)
    initialise_backbone(model.backbone, init, weights)
    memory = HybridMemory(FEATURE_DIMS[arch], len(src) + len(tgt), sp.temperature,
                          sp.memory_momentum)
    opt = Adam([p for p in model.parameters() if p.requires_grad], lr=sp.lr,
               weight_decay=sp.weight_decay)
    run = _Run()
    if not _resume(out / "last.pt", model, memory, opt, run):
        run.initial = _evaluate(model, target, eval_params, sp, workers, cache)
        log.info("spcl: before adaptation mAP %.1f rank-1 %.1f", run.initial["mAP"],
                 run.initial["rank1"])
        memory.features.copy_(_features(model, [*src, *tgt], sp, eval_params.batch_size,
                                        workers, cache))
        memory.labels[: len(src)] = torch.tensor([r.pid for r in src], dtype=torch.long)
    progress = Progress(sp.epochs * sp.iters_per_epoch, "spcl", unit="it", every=30)
    progress.done = run.epoch * sp.iters_per_epoch
    start = time.perf_counter()
    for epoch in range(run.epoch, sp.epochs):
        labels, stats = _recluster(memory, len(src), src_classes, sp, run)
        row: dict[str, float] = {**stats}
        row.update(_train_epoch(model, memory, opt, src, tgt, labels, sp, seed, epoch, workers,
                                progress, cache))
        if (epoch + 1) % sp.eval_every == 0 or epoch + 1 == sp.epochs:
            row.update(_evaluate(model, target, eval_params, sp, workers, cache))
            if row["mAP"] > run.best.get("mAP", -1.0):
                run.best = {"epoch": epoch + 1, **{k: row[k] for k in EVAL_KEYS}}
        run.history.append({"epoch": epoch + 1, **row})
        run.epoch = epoch + 1
        if on_metrics is not None:
            on_metrics(row, epoch + 1)
        if run.epoch < sp.epochs and run.epoch % checkpoint_every == 0:
            save_checkpoint(out / "last.pt", params=to_dict(sp), epoch=run.epoch, step=run.epoch,
                            model=model.state_dict(), memory=memory.state_dict(),
                            optimizer=opt.state_dict(), indep=run.indep, history=run.history,
                            best=run.best, initial=run.initial)
    atomic_write_json(out / "history.json", run.history)
    atomic_torch_save(out / "model.pt", {"model": model.state_dict(), "arch": arch,
                                         "height": sp.height, "width": sp.width, "init": init,
                                         "params": to_dict(sp), "epoch": run.epoch,
                                         "commit": git_commit()})
    final = next(h for h in reversed(run.history) if "mAP" in h)
    return {**{k: final[k] for k in EVAL_KEYS}, **{f"best_{k}": v for k, v in run.best.items()},
            **{f"init_{k}": v for k, v in run.initial.items()},
            "clusters": final["clusters"], "outliers": final["outliers"], "epochs": sp.epochs,
            "source_images": len(src), "target_images": len(tgt),
            "wall_s": time.perf_counter() - start}


def _resume(path: Path, model: nn.Module, memory: HybridMemory, opt: Adam,
            run: _Run) -> bool:
    if not path.is_file():
        return False
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    memory.load_state_dict(ckpt["memory"])
    opt.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    run.epoch, run.indep, run.history, run.best = (ckpt["epoch"], ckpt["indep"], ckpt["history"],
                                                   ckpt["best"])
    run.initial = ckpt.get("initial", {})
    log.info("resuming SpCL from %s at epoch %d", path, run.epoch)
    return True


def _recluster(memory: HybridMemory, num_src: int, src_classes: int, sp: SpclParams,
               run: _Run) -> tuple[list[int], dict[str, float]]:
    """Pseudo labels of the target entries (offset after the source identities)."""
    dist = jaccard_distance(memory.features[num_src:], sp.k1, sp.k2)
    labels, stats = self_paced_labels(dist, sp.eps, sp.eps_gap, sp.min_samples, run.indep)
    if run.indep is None and stats["indep_threshold"] == stats["indep_threshold"]:  # not NaN
        run.indep = float(stats["indep_threshold"])
    memory.labels[num_src:] = torch.as_tensor(labels, dtype=torch.long) + src_classes
    log.info("spcl: %d clusters, %d un-clustered instances", stats["clusters"],
             stats["outliers"])
    return [int(v) for v in labels], {"clusters": float(stats["clusters"]),
                                      "outliers": float(stats["outliers"])}


def _train_epoch(model: nn.Module, memory: HybridMemory, opt: Adam,
                 src: Sequence[Record], tgt: Sequence[Record], labels: list[int],
                 sp: SpclParams, seed: int, epoch: int, workers: int, progress: Progress,
                 cache: ImageCache | None) -> dict[str, float]:
    model.train()
    tgt_batches = _batches(tgt, labels, sp, seed, epoch, workers, cache)
    src_batches = (_batches(src, [r.pid for r in src], sp, seed + 1, epoch, workers, cache)
                   if src else None)
    total, images, start = 0.0, 0, time.perf_counter()
    for _ in range(sp.iters_per_epoch):
        x, idx = next(tgt_batches)
        idx = idx + len(src)
        if src_batches is not None:
            xs, idx_s = next(src_batches)
            x, idx = torch.cat([xs, x]), torch.cat([idx_s, idx])
        feats = model(x)
        loss = memory(feats, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        memory.update(feats.detach(), idx)
        total += float(loss.detach())
        images += len(x)
        progress.update(epoch=epoch + 1, loss=float(loss.detach()))
    return {"loss": total / sp.iters_per_epoch,
            "images_per_s": images / (time.perf_counter() - start)}


def _evaluate(model: nn.Module, data: ReIDData, eval_params: EvalParams, sp: SpclParams,
              workers: int, cache: ImageCache | None) -> dict[str, float]:
    from upreid.eval.evaluate import evaluate

    model.eval()
    with torch.random.fork_rng():  # evaluation leaves the training RNG stream untouched
        metrics = evaluate(model, data, eval_params, sp.height, sp.width, workers=workers,
                           cache=cache)
    model.train()
    return {k: float(metrics[k]) for k in EVAL_KEYS}
