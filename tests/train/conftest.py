"""A tiny unlabeled pool on disk for the training-loop tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upreid.data.records import Record


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    records = []
    for i in range(24):
        arr = (rng.random((32, 16, 3)) * 255).astype(np.uint8)
        path = root / f"{i:03d}.jpg"
        Image.fromarray(arr).save(path)
        records.append(Record(str(path), -1, 0))
    return records


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated datasets: 12 training and 8 test identities each, 64x32 images."""
    import dataclasses

    from upreid.data.synth import synthesize
    from upreid.params import load_params

    root = Path(__file__).resolve().parents[2]
    data = load_params(root / "params.yaml", "quick").data
    sizes = {
        "train_identities": 12,
        "test_identities": 8,
        "distractors": 4,
        "images_per_camera": (2, 3),
        "cameras_per_identity": (2, 5),
    }  # pinned: not a profile's
    data = dataclasses.replace(
        data,
        height=64,
        width=32,
        pool=dataclasses.replace(data.pool, identities=8),
        **{
            n: dataclasses.replace(getattr(data, n), **sizes)
            for n in ("market1501", "cuhk03", "msmt17", "personx")
        },
    )
    out = tmp_path_factory.mktemp("synth")
    synthesize(data, out)
    return out
