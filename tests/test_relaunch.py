"""The torchrun relaunch: its process count and the cores each process gets."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from upreid import pipeline
from upreid.params import load_params
from upreid.train import distributed

ROOT = Path(__file__).resolve().parents[1]


def _relaunched(
    monkeypatch: pytest.MonkeyPatch, nproc: int, device: str, gpus: int
) -> list[str] | None:
    """The torchrun command the relaunch would exec (None: no relaunch), on a machine with
    ``gpus`` CUDA devices (this one has none, so their count is set, not real)."""
    params = load_params(ROOT / "params.yaml", "default")
    params = dataclasses.replace(
        params,
        launch=dataclasses.replace(params.launch, nproc_per_node=nproc),
        runtime=dataclasses.replace(params.runtime, device=device),
    )
    for name in ("LOCAL_RANK", "OMP_NUM_THREADS", distributed.CORES_ENV):
        monkeypatch.setenv(name, "")  # recorded, so what the relaunch sets is undone after
        monkeypatch.delenv(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    execs: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda _f, args: execs.append(list(args)))
    pipeline.relaunch_distributed(params, ["stages/finetune.py", "bot"])
    return execs[0] if execs else None


def test_cpu_relaunch_shares_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    cmd = _relaunched(monkeypatch, 2, "auto", 0)
    assert (
        cmd is not None
        and "--nproc_per_node=2" in cmd
        and cmd[-2:] == ["stages/finetune.py", "bot"]
    )
    cores = len(os.sched_getaffinity(0))
    assert os.environ[distributed.CORES_ENV] == str(cores)
    assert os.environ["OMP_NUM_THREADS"] == str(max(1, cores // 2))


def test_one_process_per_gpu_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _relaunched(monkeypatch, 2, "auto", 1) is None  # one GPU: one process, no torchrun
    cmd = _relaunched(monkeypatch, 8, "cuda", 4)
    assert cmd is not None and "--nproc_per_node=4" in cmd
    cmd = _relaunched(monkeypatch, 2, "cpu", 1)  # the CPU asked for: the GPU count is no limit
    assert cmd is not None and "--nproc_per_node=2" in cmd
