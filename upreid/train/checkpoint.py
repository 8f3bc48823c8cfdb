"""Checkpoint files: state dicts and plain data only, written atomically, read with
``weights_only=True`` so that loading a file never runs code from it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upreid.io import atomic_torch_save, git_commit


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and this process's CUDA device) RNG states as tensors and plain
    data."""
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)  # the global generator is MT19937: a legacy tuple
    name, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's only
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(path: str | Path, rng: Any = None, **payload: Any) -> None:
    """Write ``payload`` (state dicts and plain data) with the RNG states (this process's, or
    ``rng`` when given: every rank's) and the git commit, atomically."""
    atomic_torch_save(
        path, {**payload, "rng": rng if rng is not None else rng_state(), "commit": git_commit()}
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, on the CPU; never unpickles code (``weights_only=True``)."""
    from upreid.models.checkpoints import read_blob

    return read_blob(path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
