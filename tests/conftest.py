"""Shared test setup: quiet threads, a project root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# pytest-xdist workers share the cores: each worker, and every process a test starts (stages,
# torchrun, scripts), gets its share of threads: with 2 workers of 2 threads on 2 cores, a
# script that takes 20 s alone took 113 s in the suite (13.5 s with 1 thread each).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, os.cpu_count() or 1) // WORKERS)
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)  # and the same in every process a test starts


@pytest.fixture
def project_root() -> Path:
    return ROOT


def write_bot_checkpoint(path: Path) -> Path:
    """A small BoT ``best.pt`` (ResNet-18, 4 classes, 32x16 inputs) as fine-tuning writes it."""
    from upreid.models.reid import build_reid_model

    torch.manual_seed(0)
    model = build_reid_model("bot", "resnet18", 4)
    meta = {"method": "bot", "arch": "resnet18", "num_classes": 4, "height": 32, "width": 16}
    torch.save({**meta, "model": model.state_dict()}, path)
    return path


@pytest.fixture
def bot_checkpoint(tmp_path: Path) -> Path:
    return write_bot_checkpoint(tmp_path / "best.pt")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The end-to-end test first: it takes most of the suite's time, so with two workers it
    starts at once on one while the other takes every other test. ``cuda``-marked tests need a
    GPU: without one they are reported as not run here (``benchmarks/gpu_check.py`` runs them
    on a GPU machine)."""
    items.sort(key=lambda item: "test_pipeline_e2e" not in item.nodeid)  # stable: keeps order
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA device (run by benchmarks/gpu_check.py)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(no_gpu)
