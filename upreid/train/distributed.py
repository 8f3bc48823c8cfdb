"""One code path for 1 process and for N under ``torchrun`` (gloo on CPU, NCCL on GPU): the
relaunch under ``torchrun``, the collectives of one run over the ranks, and runs spread over them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from upreid.runtime import Runtime

log = logging.getLogger(__name__)

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


# Runs spread over the ranks (a stage's runs, each done by one rank alone)

CORES_ENV = "UPREID_CORES"  # the cores the processes of a node share (set by the relaunch)
_planned: list[int] = []  # the thread count of each next run this rank does under spread (CPU)


def share_threads(
    shares: list[int], rank: int, local_rank: int, local_world: int, cores: int
) -> list[int]:
    """Threads for each run of ``rank``'s share, ``shares`` being every rank's run count: the
    node's cores divided among its ranks that still have a run at that position (the first
    ``cores % n`` of them one more), so that a rank left with the last runs of a stage takes
    the cores the others no longer use. A plan, not a reaction to timing: the same runs get the
    same thread counts every time."""
    node = range(rank - local_rank, rank - local_rank + local_world)
    plan = []
    for i in range(shares[rank]):
        active = [r for r in node if shares[r] > i]
        base, extra = divmod(cores, len(active))
        plan.append(max(1, base + (active.index(rank) < extra)))
    return plan


def take_planned_threads() -> None:
    """Give the next run of this rank's share its planned threads (nothing outside a plan)."""
    if _planned:
        torch.set_num_threads(_planned.pop(0))


def share_of(units: list[Any], rank: int, world: int) -> list[Any]:
    """``rank``'s units: every ``world``-th, counted from the last rank, so that when they do
    not divide evenly rank 0, which also logs every run to MLflow, has the fewer."""
    return units[world - 1 - rank :: world]


def spread(rt: Runtime, units: list[Any], do: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """``do(units)``, with the units spread over the ``torchrun`` ranks (one device each) when
    there are several: each rank does its :func:`share_of` them, then rank 0 goes over them all,
    reusing the finished results (and logging those of the other ranks to MLflow). Each rank's
    runs are its own (:func:`alone`); on CPU cores they share the node's cores by
    :func:`share_threads` when the relaunch set the cores to share."""
    if rt.world == 1:
        return do(units)
    # gloo even on GPUs: only barriers, and a rank waiting for the longest share holds no GPU
    owned = init_distributed(rt, timeout=timedelta(days=7), backend="gloo")
    mine = share_of(units, rt.rank, rt.world)
    threads = torch.get_num_threads()
    if rt.device.type == "cpu" and os.environ.get(CORES_ENV):
        shares = [len(share_of(units, r, rt.world)) for r in range(rt.world)]
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", rt.world))
        _planned[:] = share_threads(
            shares, rt.rank, rt.local_rank, local_world, int(os.environ[CORES_ENV])
        )
    try:
        with alone():
            if mine:
                do(mine)
        _planned.clear()
        barrier()
        with alone():
            results = do(units) if rt.main else []
        barrier()
    finally:
        _planned.clear()
        torch.set_num_threads(threads)
    if owned:
        cleanup()
    return results


def require_spread(what: str) -> None:
    """Runs done alone per process must come through :func:`spread` under ``torchrun``
    (otherwise every rank would do every run in the same folders)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        raise ValueError(
            f"{what} under torchrun runs through its stage, which spreads the "
            "runs over the processes; run this command in one process"
        )


def relaunch(nproc: int, nnodes: int, rdzv_endpoint: str, device: str, argv: list[str]) -> None:
    """Replace this process by ``torchrun`` over the same script (``argv``) with ``nproc``
    processes per node on ``nnodes`` nodes, unless that is one process or we are already under
    torchrun. On CUDA (``device`` auto or cuda) a node runs at most one process per GPU, each
    taking the GPU of its local rank."""
    if nproc * nnodes <= 1 or "LOCAL_RANK" in os.environ:
        return
    if device in ("auto", "cuda"):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if 0 < gpus < nproc:
            log.warning(
                "launch.nproc_per_node is %d but this machine has %d CUDA device(s): "
                "running %d process(es), one per device",
                nproc,
                gpus,
                gpus,
            )
            nproc = gpus
            if nproc * nnodes <= 1:
                return
    cmd = ["torchrun", f"--nproc_per_node={nproc}", f"--nnodes={nnodes}"]
    if nnodes > 1:
        cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}"]
    else:
        cmd += ["--standalone"]
    if "OMP_NUM_THREADS" not in os.environ:  # each process its share of the cores (torchrun
        # would give each one thread); spread runs re-divide them as ranks run out of runs
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        cores = cores or 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
        os.environ[CORES_ENV] = str(cores)
    log.info("relaunching under %s", " ".join(cmd))
    os.execvp(cmd[0], [*cmd, *argv])
