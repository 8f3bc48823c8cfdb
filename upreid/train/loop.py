"""The loop skeleton every trainer shares: typed state, resume, checkpoints, best weights,
periodic evaluation, the non-finite guard, the metrics callback and progress.

A trainer (pre-training, fine-tuning, SpCL) supplies what one epoch does and how to evaluate;
:class:`Trainer` does the rest. The resume state lives in one file (``last.pt`` or
``checkpoint.pt``), written atomically by the main process: the state dicts of the run's parts
(model, optimizer, scheduler, memory ...), the :class:`TrainState` and the RNG streams. On CPU,
with the same seed and worker count, a run killed at any point and started again ends bit-exactly
where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from upreid.io import atomic_torch_save, git_commit
from upreid.progress import Progress
from upreid.runtime import Runtime
from upreid.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state

log = logging.getLogger(__name__)

MetricsFn = Callable[[dict[str, float], int], None]
EVAL_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


class NonFiniteLoss(RuntimeError):
    """The loss or its gradient became NaN or infinite; training stopped and the last
    checkpoint is kept."""


class ResumeMismatch(ValueError):
    """The checkpoint in a run's folder was written by a run of other inputs (params, seed,
    method, initialisation ...): resuming it would continue that run under this one's name."""


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists), to compare a checkpoint's metadata
    with a run's."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def meta_differences(saved: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    """What differs between a checkpoint's metadata and a run's, one item per key (``key: A
    there, B here``), nested dictionaries by their differing keys; keys that one side lacks
    (a checkpoint written before the key existed) are not compared."""
    out: list[str] = []
    for key in meta:
        if key not in saved:
            continue
        there, here = _plain(saved[key]), _plain(meta[key])
        if there == here:
            continue
        if isinstance(there, dict) and isinstance(here, dict):
            out += [f"{key}.{d}" for d in meta_differences(there, here)]
        else:
            out.append(f"{key}: {there} there, {here} here")
    return out


def first_items(items: list[str], limit: int = 4) -> str:
    """The first ``limit`` items and how many more."""
    more = [f"{len(items) - limit} more"] if len(items) > limit else []
    return "; ".join(items[:limit] + more)


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> Any: ...


@dataclass
class TrainState:
    """Where a run stands: finished epochs, optimizer steps, steps into the current epoch, the
    evaluated history, the best evaluation, and loop-specific values (``extra``)."""

    epoch: int = 0
    step: int = 0
    in_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def check_finite(value: Tensor, where: str, checkpoint: Path, what: str = "loss") -> None:
    """Raise :class:`NonFiniteLoss` naming ``where`` and ``what`` (the loss, the gradient norm)
    when ``value`` is NaN or infinite."""
    if not torch.isfinite(value):
        raise NonFiniteLoss(
            f"{where}: {what} is {value.item()}; stopped, last good checkpoint kept at {checkpoint}"
        )


def state_copy(model: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of ``model``'s state dict (its metadata kept)."""
    weights = model.state_dict()
    for key, value in weights.items():
        weights[key] = value.detach().to("cpu", copy=True)
    return weights


class BestWeights:
    """The best evaluation's weights: kept in memory when found, written to ``path`` with the
    next checkpoint or at the end (one write where there were several), so that the file on
    disk always matches the ``best`` a checkpoint records."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta
        self.pending: dict[str, Any] | None = None

    def keep(self, model: nn.Module, epoch: int, row: dict[str, float]) -> None:
        self.pending = {
            **self.meta,
            "model": state_copy(model),
            "epoch": epoch,
            "metrics": dict(row),
        }

    def write(self) -> None:
        if self.pending is not None:
            atomic_torch_save(self.path, {**self.pending, "commit": git_commit()})
            self.pending = None


class Trainer:
    """Runs epochs of one training run: resume, evaluate, keep the best, checkpoint, report.

    ``parts`` are saved and restored by name; ``meta`` (plain data) goes into every checkpoint.
    ``on_metrics(row, x)`` receives each logged row: per step when the trainer logs steps
    (:meth:`log_step`), and per epoch with ``x`` the epoch, or the step when ``x_axis`` is
    ``"step"``.
    """

    def __init__(
        self,
        name: str,
        runtime: Runtime,
        checkpoint: Path,
        parts: Mapping[str, Stateful],
        meta: dict[str, Any],
        total: int,
        unit: str,
        on_metrics: MetricsFn | None = None,
        x_axis: str = "epoch",
    ) -> None:
        self.name, self.runtime, self.path = name, runtime, checkpoint
        self.parts, self.meta = dict(parts), meta
        self.on_metrics, self.x_axis = on_metrics, x_axis
        self.state = TrainState()
        self.progress = Progress(total, name, unit=unit, every=30)
        self.stop = False  # set by an epoch that reached a step budget mid-epoch

    # ------------------------------------------------------------------ resume and checkpoints

    def resume(self) -> bool:
        """Restore every part, the state and the RNG from the checkpoint, if there is one and
        its metadata (``meta``: params, seed ...) is this run's; :class:`ResumeMismatch` if it
        is another run's."""
        if not self.path.is_file():
            return False
        ckpt = load_checkpoint(self.path)
        if differ := meta_differences(ckpt, self.meta):
            raise ResumeMismatch(
                f"{self.path} is the checkpoint of a run with other inputs "
                f"({first_items(differ)}): resuming it would continue that run; give this run "
                "its own folder, or remove the file to start over"
            )
        for name, part in self.parts.items():
            part.load_state_dict(ckpt[name])
        self.state = TrainState(**ckpt["state"])
        rng = ckpt["rng"]  # a list of every rank's under DDP, this process's own restored
        set_rng_state(rng[self.runtime.rank] if isinstance(rng, list) else rng)
        log.info(
            "%s: resuming from %s at epoch %d, step %d",
            self.name,
            self.path,
            self.state.epoch,
            self.state.step,
        )
        return True

    def save(self) -> None:
        """Write the checkpoint atomically (main process only)."""
        rng: Any = None
        if self.runtime.world > 1:  # every rank's streams (their augmentations differ)
            import torch.distributed as dist

            rng = [None] * self.runtime.world
            dist.all_gather_object(rng, rng_state())
        if not self.runtime.main:
            return
        payload = {name: part.state_dict() for name, part in self.parts.items()}
        save_checkpoint(self.path, rng=rng, **payload, **self.meta, state=asdict(self.state))

    # ------------------------------------------------------------------ steps

    def optimize(
        self,
        loss: Tensor,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        """One guarded optimizer step on ``loss`` (and a per-step scheduler step)."""
        where = f"{self.name} at step {self.state.step} (epoch {self.state.epoch})"
        check_finite(loss, where, self.path)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # A finite loss can still have an infinite gradient (a faulty kernel; measured: oneDNN's
        # bf16 weight gradient on one-pixel maps), which one step would write into the weights.
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.get_total_norm([g for g in grads if g is not None])
        check_finite(norm, where, self.path, "the gradient norm")
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        self.state.step += 1
        self.state.in_epoch += 1

    def log_step(self, row: dict[str, float]) -> None:
        """Report a per-step row (x = the global step)."""
        if self.on_metrics is not None:
            self.on_metrics(row, self.state.step)

    # ------------------------------------------------------------------ epochs

    def fit(
        self,
        epochs: int,
        train_epoch: Callable[[int], dict[str, float]],
        evaluate: Callable[[], dict[str, float]] | None = None,
        eval_every: int = 1,
        checkpoint_every: int = 1,
        best: BestWeights | None = None,
        best_of: nn.Module | None = None,
        final_checkpoint: bool = False,
    ) -> TrainState:
        """Epochs ``state.epoch .. epochs - 1``: train, evaluate every ``eval_every`` epochs and
        at the end, keep the best weights of ``best_of`` by mAP (when the evaluation gives one),
        report the row, checkpoint
        every ``checkpoint_every`` epochs (and after the last one with ``final_checkpoint``)."""
        if checkpoint_every < 1 or eval_every < 1:
            raise ValueError(
                f"checkpoint_every and eval_every must be >= 1 epoch, got "
                f"{checkpoint_every} and {eval_every}"
            )
        self.progress.done = self.state.step
        while self.state.epoch < epochs and not self.stop:
            epoch = self.state.epoch
            row = train_epoch(epoch)
            if self.stop:  # a step budget ended the epoch early: resumable mid-epoch
                self.save()
                break
            last = epoch + 1 == epochs
            if evaluate is not None and ((epoch + 1) % eval_every == 0 or last):
                row.update(self.evaluate(evaluate))
                if "mAP" in row and row["mAP"] > self.state.best.get("mAP", -1.0):
                    self.state.best = {"epoch": epoch + 1, **{k: row[k] for k in EVAL_KEYS}}
                    if best is not None and best_of is not None:
                        best.keep(best_of, epoch + 1, row)
            self.state.history.append({"epoch": epoch + 1, **row})
            self.state.epoch, self.state.in_epoch = epoch + 1, 0
            if self.on_metrics is not None and row:
                self.on_metrics(row, self.state.step if self.x_axis == "step" else epoch + 1)
            if best is not None and (last or (epoch + 1) % checkpoint_every == 0):
                best.write()  # before the checkpoint: a resumed run's best is the one on disk
            if (not last and (epoch + 1) % checkpoint_every == 0) or (last and final_checkpoint):
                self.save()
        return self.state

    def evaluate(self, evaluate: Callable[[], dict[str, float]]) -> dict[str, float]:
        """Run ``evaluate``; it leaves the training RNG streams and train mode untouched."""
        modes = [(m, m.training) for m in self.parts.values() if isinstance(m, nn.Module)]
        devices = [self.runtime.device] if self.runtime.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            metrics = evaluate()
        for module, training in modes:
            module.train(training)
        return {k: float(v) for k, v in metrics.items()}


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups as BoT sets them: weight decay on weights, none on biases and
    normalisation parameters (every 1-d tensor). Frozen parameters are left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def rate(images: int, since: float) -> float:
    """Images per second since ``since`` (a ``time.perf_counter()`` reading)."""
    return images / max(time.perf_counter() - since, 1e-9)
