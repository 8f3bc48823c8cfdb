"""Files from outside are data: a crafted checkpoint or keys file never runs its code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from upreid.data.readers import read_keys, read_pool
from upreid.data.records import DatasetLayoutError
from upreid.models.backbone import build_backbone, load_backbone_file
from upreid.models.checkpoints import load_model
from upreid.train.checkpoint import load_checkpoint


class _Payload:
    """Unpickling this calls ``os.system`` (what a malicious file does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return os.system, (f"touch {self.marker}",)


def _crafted_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "backbone": build_backbone("resnet18").state_dict(),
            "arch": "resnet18",
            "x": _Payload(marker),
        },
        path,
    )
    return path, marker


@pytest.mark.parametrize(
    "loader",
    [load_checkpoint, load_model, lambda p: load_backbone_file(build_backbone("resnet18"), p)],
)
def test_a_crafted_checkpoint_does_not_run(loader, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, marker = _crafted_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        loader(path)
    assert not marker.exists()


def test_a_crafted_keys_file_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "data.mdb").write_bytes(b"")
    (tmp_path / "keys.pkl").write_bytes(pickle.dumps(["a", _Payload(marker)]))
    with pytest.raises(DatasetLayoutError, match="only a list of str or bytes"):
        read_pool(tmp_path)
    assert not marker.exists()


def test_a_plain_keys_file_reads(tmp_path: Path) -> None:
    (tmp_path / "keys.pkl").write_bytes(pickle.dumps([b"0001.jpg", "0002.jpg"]))
    assert read_keys(tmp_path / "keys.pkl") == ["0001.jpg", "0002.jpg"]
    (tmp_path / "keys.pkl").write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(DatasetLayoutError, match="expected a list"):
        read_keys(tmp_path / "keys.pkl")
