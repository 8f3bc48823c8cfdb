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
