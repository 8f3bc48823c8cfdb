"""One code path for 1 process and for N under ``torchrun`` (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group ``torchrun`` describes (env ``RANK``/``WORLD_SIZE``), or run alone.

    Multi-node runs use the same code: ``torchrun --rdzv_endpoint`` sets the env.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, world, local_rank, device)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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
