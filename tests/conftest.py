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


# The longest tests go first, so that the two workers finish together (the end-to-end test
# alone takes most of the suite's time).
LONGEST_FIRST = (
    "test_pipeline_e2e.py",
    "test_spread_runs.py",
    "test_finetune_loop.py::test_each_method_learns_far_above_untrained",
    "test_spcl_loop.py",
    "test_sigkill_resume.py",
)


def _rank(item: pytest.Item) -> int:
    return next((i for i, name in enumerate(LONGEST_FIRST) if name in item.nodeid), 99)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first; ``cuda``-marked tests need a GPU: without one they are reported as not
    run here (``benchmarks/gpu_check.py`` runs them on a GPU machine)."""
    items.sort(key=_rank)  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA device (run by benchmarks/gpu_check.py)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(no_gpu)
