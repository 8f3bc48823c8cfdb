"""The pre-training loop of MoCo v2 and UP-ReID: one code path for 1 or N processes, resumable.

Run alone or under ``torchrun``; every epoch (and every ``checkpoint_every_steps``) the whole
state (model with EMA and queues, optimizer, scheduler, RNG, epoch/step) is written atomically
to ``out/checkpoint.pt``; a restarted run resumes from it and, on CPU with the same seed and
worker count, ends bit-exactly where an uninterrupted run would. The backbone is exported to
``out/backbone.pt`` for fine-tuning.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from upreid.data.dataset import ImageDataset, collate
from upreid.data.records import Record
from upreid.data.transforms import PretrainViews
from upreid.io import atomic_torch_save, git_commit
from upreid.models.moco import MoCo
from upreid.models.upreid import UPReID
from upreid.params import PretrainParams, to_dict
from upreid.progress import Progress
from upreid.train.checkpoint import load_checkpoint, save_checkpoint, seed_everything, set_rng_state
from upreid.train.distributed import DistInfo, cleanup, init_distributed
from upreid.train.optim import SGD, LambdaSchedule

log = logging.getLogger(__name__)
MetricsFn = Callable[[dict[str, float], int], None]


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def build_model(pp: PretrainParams, seed: int) -> MoCo:
    """MoCo (``method: moco``) or UP-ReID with its switches, from the ``pretrain`` section."""
    common = dict(arch=pp.arch, dim=pp.dim, hidden_dim=pp.hidden_dim, queue_size=pp.queue_size,
                  ema_momentum=pp.ema_momentum, tau_global=pp.temperature_global,
                  bn_splits=pp.bn_splits, seed=seed)
    if pp.method == "moco":
        return MoCo(**common)  # type: ignore[arg-type]
    return UPReID(**common, tau_patch=pp.temperature_patch,  # type: ignore[arg-type]
                  tau_cc=pp.temperature_consistency, lambda_global=pp.lambda_global,
                  lambda_patch=pp.lambda_patch, lambda_cc=pp.lambda_cc, cc=pp.cc, icc=pp.icc,
                  hm=pp.hm, patches=pp.patches, positive=pp.positive)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _loader(pp: PretrainParams, records: Sequence[Record], dist: DistInfo, seed: int
            ) -> tuple[DataLoader, DistributedSampler]:
    dataset = ImageDataset(records, PretrainViews(pp.height, pp.width))
    per_rank = pp.batch_size // dist.world
    if per_rank < 2:
        raise ValueError(f"pretrain.batch_size {pp.batch_size} over {dist.world} processes "
                         "leaves fewer than 2 images per process")
    if len(records) < pp.batch_size:
        raise ValueError(f"the pool holds {len(records)} images, fewer than one batch "
                         f"(pretrain.batch_size {pp.batch_size})")
    sampler = DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                 seed=seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True,
                        num_workers=pp.workers, collate_fn=collate,
                        persistent_workers=False, pin_memory=dist.device.type == "cuda")
    return loader, sampler


def _autocast(pp: PretrainParams, device: torch.device) -> Any:
    use = pp.amp == "bf16" or (pp.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


def export_backbone(model: MoCo, pp: PretrainParams, path: Path) -> None:
    """The online backbone, loadable by every fine-tuning method (``backbone.*`` weights)."""
    atomic_torch_save(path, {"backbone": model.online.backbone.state_dict(), "arch": pp.arch,
                             "height": pp.height, "width": pp.width, "params": to_dict(pp),
                             "commit": git_commit()})


class _State:
    """Where training stands: epoch and global step; restored from a checkpoint."""

    def __init__(self) -> None:
        self.epoch, self.step, self.in_epoch = 0, 0, 0


def _resume(path: Path, model: MoCo, opt: SGD, sched: LambdaSchedule,
            state: _State) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    model.shuffle_gen.set_state(ckpt["shuffle_gen"])
    state.epoch, state.step, state.in_epoch = ckpt["epoch"], ckpt["step"], ckpt["in_epoch"]
    log.info("resuming from %s at epoch %d step %d", path, state.epoch, state.step)
    return ckpt


def pretrain(pp: PretrainParams, records: Sequence[Record], out: str | Path, seed: int,
             on_metrics: MetricsFn | None = None, max_steps: int | None = None
             ) -> dict[str, Any]:
    """Pre-train on ``records`` (an unlabeled pool); write checkpoints and ``backbone.pt`` to
    ``out``; return summary metrics. ``max_steps`` stops early (tests, benchmarks)."""
    out = Path(out)
    dist = init_distributed()
    seed_everything(seed)
    model = build_model(pp, seed).to(dist.device)
    if pp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader, sampler = _loader(pp, records, dist, seed)
    steps_per_epoch = len(loader)
    total = min(pp.epochs * steps_per_epoch, max_steps or 1 << 62)
    opt = SGD(model.online.parameters(), lr=pp.lr, momentum=pp.momentum,
              weight_decay=pp.weight_decay)
    warmup = pp.warmup_epochs * steps_per_epoch
    sched = LambdaSchedule(opt, lambda s: lr_factor(s, warmup, pp.epochs * steps_per_epoch))
    state = _State()
    ckpt_path = out / "checkpoint.pt"
    resumed = _resume(ckpt_path, model, opt, sched, state)
    net = DistributedDataParallel(model) if dist.world > 1 else model
    if pp.compile:
        net = torch.compile(net)
    ctx = dict(pp=pp, model=model, net=net, opt=opt, sched=sched, dist=dist, state=state,
               ckpt_path=ckpt_path, total=total, on_metrics=on_metrics, out=out)
    start = time.perf_counter()
    progress = Progress(total, f"pretrain {pp.method}", unit="step", every=30)
    progress.done = state.step
    rates: list[float] = []
    while state.step < total:
        sampler.set_epoch(state.epoch)
        _train_epoch(ctx, loader, resumed, progress, rates, seed)
        resumed = None
    if dist.main:
        export_backbone(model, pp, out / "backbone.pt")
    summary = {"steps": state.step, "epochs": state.epoch, "wall_s": time.perf_counter() - start,
               "images_per_s": statistics.median(rates) if rates else 0.0,
               **{k: v for k, v in ctx.get("last", {}).items() if k.startswith("loss")}}
    cleanup()
    return summary


def _train_epoch(ctx: dict[str, Any], loader: DataLoader, resumed: dict[str, Any] | None,
                 progress: Progress, rates: list[float], seed: int) -> None:
    """One epoch from ``state.in_epoch``; a resumed run replays the skipped batches' loading
    and then restores the RNG, so the rest of the epoch is what it would have been."""
    pp, model, net, opt, state = ctx["pp"], ctx["model"], ctx["net"], ctx["opt"], ctx["state"]
    dist, device = ctx["dist"], ctx["dist"].device
    loader.generator = torch.Generator().manual_seed(seed * 100_003 + state.epoch)
    batches = iter(loader)
    for _ in range(state.in_epoch):
        next(batches)
    if resumed is not None:
        set_rng_state(resumed["rng"])
    net.train()
    sums: dict[str, float] = {}
    tick = time.perf_counter()
    for (x_o, x_q, x_k), *_ in batches:
        mf = torch.channels_last if pp.channels_last else torch.contiguous_format
        x_o, x_q, x_k = (t.to(device, non_blocking=True).contiguous(memory_format=mf)
                         for t in (x_o, x_q, x_k))
        with _autocast(pp, device):
            losses = net(x_o, x_q, x_k)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"pre-training loss is {loss.item()} at step {state.step} "
                                f"(epoch {state.epoch}); stopped, last good checkpoint kept at "
                                f"{ctx['ckpt_path']}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx["sched"].step()
        model.step_ema()
        state.step += 1
        state.in_epoch += 1
        now = time.perf_counter()
        rate = len(x_q) * dist.world / (now - tick)
        tick = now
        rates.append(rate)
        row = {k: float(v.detach()) for k, v in losses.items()}
        row.update(lr=opt.param_groups[0]["lr"], images_per_s=rate)
        ctx["last"] = row
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v
        if ctx["on_metrics"] is not None:
            ctx["on_metrics"](row, state.step)
        progress.update(epoch=state.epoch, loss=row["loss"], img_s=rate)
        if state.in_epoch < len(loader):
            if state.step >= ctx["total"]:  # max_steps reached mid-epoch: keep it resumable
                _checkpoint(ctx)
                return
            every = pp.checkpoint_every_steps
            if every and state.step % every == 0:
                _checkpoint(ctx)
    state.epoch += 1
    state.in_epoch = 0
    _checkpoint(ctx)


def _checkpoint(ctx: dict[str, Any]) -> None:
    if not ctx["dist"].main:
        return
    state = ctx["state"]
    save_checkpoint(ctx["ckpt_path"], params=to_dict(ctx["pp"]), epoch=state.epoch,
                    step=state.step, in_epoch=state.in_epoch, model=ctx["model"].state_dict(),
                    optimizer=ctx["opt"].state_dict(), scheduler=ctx["sched"].state_dict(),
                    shuffle_gen=ctx["model"].shuffle_gen.get_state())
