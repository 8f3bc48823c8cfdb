"""Shared test setup: quiet threads, a project root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def project_root() -> Path:
    return ROOT


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``cuda``-marked tests need a GPU: without one they are reported as not run here
    (``benchmarks/gpu_check.py`` runs them on a GPU machine)."""
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA device (run by benchmarks/gpu_check.py)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(no_gpu)
