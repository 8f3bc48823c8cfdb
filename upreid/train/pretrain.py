"""The pre-training loop of MoCo v2 and UP-ReID: one code path for 1 or N processes, resumable.

Run alone or under ``torchrun`` (DDP, one device per process); every epoch (and every
``checkpoint_every_steps``) the whole state (model with EMA and queues, optimizer, scheduler,
RNG, epoch/step) is written atomically to ``out/checkpoint.pt``; a restarted run resumes from it
and, on CPU with the same seed and worker count, ends bit-exactly where an uninterrupted run
would. The backbone is exported to ``out/backbone.pt`` for fine-tuning.
"""

from __future__ import annotations

import hashlib
import logging
import math
import statistics
import time
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, DistributedSampler

from upreid.data.dataset import ImageDataset, PersonPairs, collate
from upreid.data.records import Record
from upreid.data.transforms import PretrainViews, test_transform
from upreid.eval.frozen import Probe
from upreid.io import atomic_torch_save, git_commit
from upreid.models.moco import MoCo
from upreid.models.upreid import UPReID
from upreid.params import PretrainParams, to_dict
from upreid.runtime import CPU, Runtime
from upreid.train.checkpoint import rng_state, seed_everything, set_rng_state
from upreid.train.distributed import cleanup, init_distributed
from upreid.train.loop import MetricsFn, NonFiniteLoss, Trainer, rate

__all__ = ["NonFiniteLoss", "build_model", "export_backbone", "lr_factor", "pretrain"]
log = logging.getLogger(__name__)


def build_model(pp: PretrainParams, seed: int) -> MoCo:
    """MoCo (``method: moco``) or UP-ReID with its switches, from the ``pretrain`` section."""
    common: dict[str, Any] = dict(
        arch=pp.arch,
        dim=pp.dim,
        hidden_dim=pp.hidden_dim,
        queue_size=pp.queue_size,
        ema_momentum=pp.ema_momentum,
        tau_global=pp.temperature_global,
        bn_splits=pp.bn_splits,
        seed=seed,
    )
    if pp.method == "moco":
        return MoCo(**common)
    return UPReID(
        **common,
        tau_patch=pp.temperature_patch,
        tau_cc=pp.temperature_consistency,
        lambda_global=pp.lambda_global,
        lambda_patch=pp.lambda_patch,
        lambda_cc=pp.lambda_cc,
        cc=pp.cc,
        icc=pp.icc,
        hm=pp.hm,
        patches=pp.patches,
        positive=pp.positive,
        cc_target=pp.cc_target,
        min_patch_height=pp.min_patch_height,
    )


def lr_factor(step: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` at ``total`` (0:
    MoCo v2's decay to 0; 1: constant after the warm-up)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain_dataset(pp: PretrainParams, records: Sequence[Record]) -> ImageDataset:
    """The pool as ``((x_o, x_q, x_k), pid, camid, index)`` items: the section's views, with
    ``x_k`` from the same image or, with ``positives: person``, from another of the person."""
    views = PretrainViews.from_params(pp)
    if pp.positives == "person":
        return PersonPairs(records, views)
    return ImageDataset(records, views)


def _loader(
    pp: PretrainParams, records: Sequence[Record], rt: Runtime, seed: int
) -> tuple[DataLoader, DistributedSampler]:
    dataset = pretrain_dataset(pp, records)
    per_rank = pp.batch_size // rt.world
    if per_rank < 2:
        raise ValueError(
            f"pretrain.batch_size {pp.batch_size} over {rt.world} processes "
            "leaves fewer than 2 images per process"
        )
    if len(records) < pp.batch_size:
        raise ValueError(
            f"the pool holds {len(records)} images, fewer than one batch "
            f"(pretrain.batch_size {pp.batch_size})"
        )
    sampler: DistributedSampler = DistributedSampler(
        dataset, num_replicas=rt.world, rank=rt.rank, shuffle=True, seed=seed, drop_last=True
    )
    loader = DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        drop_last=True,
        num_workers=pp.workers,
        collate_fn=collate,
        persistent_workers=False,
        pin_memory=rt.device.type == "cuda",
    )
    return loader, sampler


def recalibrated(
    trunk: nn.Module, records: Sequence[Record], pp: PretrainParams, rt: Runtime
) -> nn.Module:
    """``trunk`` itself when ``pp.bn_recalibrate`` is 0; else a copy whose BN running
    statistics are re-estimated (a plain average) on that many batches of whole, unaugmented
    images, evenly spaced over ``records``. Training mixes in other statistics (UP-ReID's
    patches, augmented views); fine-tuning and retrieval see whole images."""
    if not pp.bn_recalibrate:
        return trunk
    copy = deepcopy(trunk)
    bns = [m for m in copy.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    count = min(len(records), pp.bn_recalibrate * pp.batch_size)
    chosen = [records[i * len(records) // count] for i in range(count)]
    dataset = ImageDataset(chosen, test_transform(pp.height, pp.width))
    copy.train()
    with torch.no_grad():
        for x, *_ in DataLoader(dataset, batch_size=pp.batch_size, collate_fn=collate):
            copy(rt.images(x))
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    return copy.eval()


def export_backbone(
    model: MoCo, pp: PretrainParams, path: Path, trunk: nn.Module | None = None
) -> None:
    """The online backbone (or ``trunk``, its recalibrated copy), loadable by every fine-tuning
    method (``backbone.*`` weights)."""
    trunk = trunk or model.online.backbone
    weights = {k: v.detach().cpu() for k, v in trunk.state_dict().items()}
    atomic_torch_save(
        path,
        {
            "backbone": weights,
            "arch": pp.arch,
            "height": pp.height,
            "width": pp.width,
            "params": to_dict(pp),
            "commit": git_commit(),
        },
    )


def pretrain(
    pp: PretrainParams,
    records: Sequence[Record],
    out: str | Path,
    seed: int,
    runtime: Runtime | None = None,
    on_metrics: MetricsFn | None = None,
    max_steps: int | None = None,
    probe: Probe | None = None,
    probe_every: int = 1,
) -> dict[str, Any]:
    """Pre-train on ``records`` (an unlabeled pool) on ``runtime``'s device; write checkpoints
    and ``backbone.pt`` to ``out``; return summary metrics. ``max_steps`` stops early (tests,
    benchmarks) with a resumable checkpoint. ``probe`` (e.g. frozen-feature retrieval,
    :mod:`upreid.eval.frozen`) measures the online trunk before the first step (``init_*`` in
    the summary: the untrained network), every ``probe_every`` epochs and at the end; its values
    are logged against the step."""
    out, rt = Path(out), runtime or CPU
    owned = init_distributed(rt)
    seed_everything(seed)
    model = rt.place(build_model(pp, seed))
    loader, sampler = _loader(pp, records, rt, seed)
    steps_per_epoch = len(loader)
    total = min(pp.epochs * steps_per_epoch, max_steps or 1 << 62)
    opt = torch.optim.SGD(
        model.online.parameters(), lr=pp.lr, momentum=pp.momentum, weight_decay=pp.weight_decay
    )
    warmup = pp.warmup_epochs * steps_per_epoch
    sched = LambdaLR(opt, lambda s: lr_factor(s, warmup, pp.epochs * steps_per_epoch, pp.lr_floor))
    trainer = Trainer(
        f"pretrain {pp.method}",
        rt,
        out / "checkpoint.pt",
        {"model": model, "optimizer": opt, "scheduler": sched},
        {"params": to_dict(pp), "seed": seed},
        total,
        "step",
        on_metrics,
        x_axis="step",
    )
    if trainer.resume():
        model.shuffle_gen.set_state(trainer.state.extra["shuffle_gen"])
    evaluate = None
    if probe is not None:
        trunk = model.online.backbone

        def evaluate() -> dict[str, float]:
            was = trunk.training
            try:
                return probe(recalibrated(trunk, records, pp, rt))
            finally:
                trunk.train(was)

        if trainer.state.step == 0:  # the untrained network: the curve's first point
            row = trainer.evaluate(lambda: untrained_rows(probe, trunk, records, pp, rt))
            trainer.state.history.append({"epoch": 0, **row})
            if on_metrics is not None:
                on_metrics(row, 0)
        elif on_metrics is not None:  # a resumed run's record gets the curve measured so far
            for past in trainer.state.history:
                frozen = {k: v for k, v in past.items() if k.startswith("frozen_")}
                if frozen:
                    on_metrics(frozen, int(past["epoch"]) * steps_per_epoch)
    net = rt.wrap(model)
    if pp.compile:
        net = cast(nn.Module, torch.compile(net))
    epoch_fn = _EpochFn(pp, model, net, opt, sched, trainer, loader, sampler, seed, total)
    start = time.perf_counter()
    trainer.fit(
        pp.epochs, epoch_fn, evaluate, probe_every, checkpoint_every=1, final_checkpoint=True
    )
    if rt.main:
        exported = recalibrated(model.online.backbone, records, pp, rt)
        export_backbone(model, pp, out / "backbone.pt", exported)
    summary = {
        "steps": trainer.state.step,
        "epochs": trainer.state.epoch,
        "wall_s": time.perf_counter() - start,
        "images_per_s": statistics.median(epoch_fn.rates) if epoch_fn.rates else 0.0,
        **{k: v for k, v in epoch_fn.last.items() if k.startswith("loss")},
        **_probed(trainer.state.history),
        **{f"runtime_{k}": v for k, v in rt.describe().items() if k != "device_name"},
    }
    if owned:
        cleanup()
    return summary


UNTRAINED_BN_BATCHES = 20  # batches of pool images for the untrained network's BN statistics
# The untrained rows measured in this process, by probe and network: the runs of one seed start
# from the same trunk, so a process doing several (a spread stage) measures it once.
_untrained: dict[tuple[Any, ...], dict[str, float]] = {}


def _state_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def untrained_rows(
    probe: Probe, trunk: nn.Module, records: Sequence[Record], pp: PretrainParams, rt: Runtime
) -> dict[str, float]:
    """The untrained network, twice: as initialised (``frozen_*``: BatchNorm's running
    statistics are still the identity, 0 and 1), and with its BN statistics estimated on whole
    pool images, weights unchanged (``frozen_bnest_*``), which is how every trained trunk is
    evaluated. The two differ by several mAP on the generated sets
    (``reports/studies/untrained_bn.py``), so the report shows both baselines."""
    batches = pp.bn_recalibrate or UNTRAINED_BN_BATCHES
    pool = hashlib.sha256("\n".join(str(r.path) for r in records).encode()).hexdigest()
    key = (probe, _state_digest(trunk), pp.height, pp.width, pp.batch_size, batches, pool)
    if key in _untrained:
        log.info("untrained network: measured earlier in this process, reused")
        return dict(_untrained[key])
    if any(k[0] is not probe for k in _untrained):
        _untrained.clear()  # another probe's rows: let it go
    was = trunk.training
    try:
        row = probe(trunk.eval())
        estimated = recalibrated(trunk, records, replace(pp, bn_recalibrate=batches), rt)
        row |= {k.replace("frozen_", "frozen_bnest_", 1): v for k, v in probe(estimated).items()}
    finally:
        trunk.train(was)
    _untrained[key] = dict(row)
    return row


def _probed(history: list[dict[str, float]]) -> dict[str, float]:
    """The probe's values before training (``init_*``, the epoch-0 row) and at the last
    evaluation."""
    rows = [r for r in history if "frozen_mAP" in r]
    if not rows:
        return {}
    untrained = [r for r in rows if r["epoch"] == 0][:1]
    first = {f"init_{k}": v for r in untrained for k, v in r.items() if k.startswith("frozen_")}
    return {**first, **{k: v for k, v in rows[-1].items() if k.startswith("frozen_")}}


class _EpochFn:
    """One pre-training epoch from ``state.in_epoch``; a resumed run replays the skipped
    batches' loading and then restores the RNG, so the rest of the epoch is what it would have
    been. Checkpoints every ``checkpoint_every_steps``; stops at the step budget."""

    def __init__(
        self,
        pp: PretrainParams,
        model: MoCo,
        net: torch.nn.Module,
        opt: torch.optim.Optimizer,
        sched: LambdaLR,
        trainer: Trainer,
        loader: DataLoader,
        sampler: DistributedSampler,
        seed: int,
        total: int,
    ) -> None:
        self.pp, self.model, self.net, self.opt, self.sched = pp, model, net, opt, sched
        self.trainer, self.loader, self.sampler = trainer, loader, sampler
        self.seed, self.total = seed, total
        self.rates: list[float] = []
        self.last: dict[str, float] = {}

    def __call__(self, epoch: int) -> dict[str, float]:
        state, rt = self.trainer.state, self.trainer.runtime
        if state.step >= self.total:  # the budget ended with the last epoch: take no batch
            self.trainer.stop = True
            return {}
        self.sampler.set_epoch(epoch)
        self.loader.generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        batches = iter(self.loader)
        replay = rng_state() if state.in_epoch else None
        for _ in range(state.in_epoch):
            next(batches)
        if replay is not None:
            set_rng_state(replay)  # skipping consumed nothing of the training streams
        self.net.train()
        tick = time.perf_counter()
        for (x_o, x_q, x_k), *_ in batches:
            x_o, x_q, x_k = (rt.images(t) for t in (x_o, x_q, x_k))
            with rt.autocast():
                losses = self.net(x_o, x_q, x_k)
            self.trainer.optimize(losses["loss"], self.opt, self.sched)
            self.model.step_ema()
            self.rates.append(rate(len(x_q) * rt.world, tick))
            tick = time.perf_counter()
            if (
                state.step % self.pp.log_every_steps == 0
                or state.in_epoch == len(self.loader)
                or state.step >= self.total
            ):
                row = {k: float(v.detach()) for k, v in losses.items()}  # syncs the device
                row.update(lr=self.opt.param_groups[0]["lr"], images_per_s=self.rates[-1])
                self.last = row
                self.trainer.log_step(row)
                self.trainer.progress.update(epoch=epoch, loss=row["loss"], img_s=self.rates[-1])
            state.extra["shuffle_gen"] = self.model.shuffle_gen.get_state()
            if state.in_epoch < len(self.loader):
                if state.step >= self.total:  # the step budget ends the run mid-epoch
                    self.trainer.stop = True
                    return {}
                every = self.pp.checkpoint_every_steps
                if every and state.step % every == 0:
                    self.trainer.save()
        return {}
