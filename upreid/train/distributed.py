"""One code path for 1 process and for N under ``torchrun`` (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from upreid.runtime import Runtime

_alone = False  # set by :func:`alone`: collectives act as in one process


def init_distributed(
    runtime: Runtime, timeout: timedelta | None = None, backend: str | None = None
) -> bool:
    """Join the process group ``torchrun`` describes (NCCL on CUDA, gloo on CPU); nothing when
    alone. Multi-node runs use the same code: ``torchrun --rdzv_endpoint`` sets the env.
    ``timeout`` bounds each collective (a barrier after runs of unequal length needs a long
    one). Returns whether this call created the group (its caller then ends it)."""
    if runtime.world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if runtime.device.type == "cuda" else "gloo")
        dist.init_process_group(backend, timeout=timeout)
        return True
    return False


@contextmanager
def alone() -> Iterator[None]:
    """Within: this process's collectives (:func:`gather`, the MoCo shuffle) act as in a
    process of its own, though it belongs to a group: a run one rank does by itself while the
    others do other runs (:func:`upreid.pipeline.spread`)."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def barrier() -> None:
    """Wait for every process of the group (nothing when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def world_size() -> int:
    if _alone or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from every rank along dim 0 (no gradient); itself when alone."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def batch_shuffle(x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """MoCo's shuffle-BN: a batch permuted across all ranks; returns this rank's shard and the
    inverse permutation. The permutation comes from ``generator`` (same seed on every rank)."""
    everything = gather(x)
    perm = torch.randperm(len(everything), generator=generator).to(x.device)
    rank = dist.get_rank() if world_size() > 1 else 0
    shard = perm.view(world_size(), -1)[rank]
    return everything[shard], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(y: Tensor, inverse: Tensor) -> Tensor:
    """Undo :func:`batch_shuffle` on the outputs ``y`` (B, ...): this rank's rows, in order."""
    everything = gather(y)
    rank = dist.get_rank() if world_size() > 1 else 0
    return everything[inverse.view(world_size(), -1)[rank]]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
