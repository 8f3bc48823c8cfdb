import errno
import os
from pathlib import Path

import pytest
import torch

from upreid import io as uio
from upreid.train.checkpoint import load_checkpoint, save_checkpoint


class _FullDisk:
    """A file object that accepts ``room`` bytes, then fails as a full disk does."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.fh.write(data[: self.room])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


def _fill_disk(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    real = os.fdopen
    monkeypatch.setattr(uio.os, "fdopen", lambda fd, mode: _FullDisk(real(fd, mode), room))


def test_disk_full_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, params={"lr": 1}, epoch=1, step=10, model={"w": torch.ones(1000)})
    before = path.read_bytes()
    _fill_disk(monkeypatch, room=100)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, params={"lr": 1}, epoch=2, step=20, model={"w": torch.zeros(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


def test_atomic_json_roundtrip_and_failure(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m" / "metrics.json"
    uio.atomic_write_json(path, {"mAP": 1.5})
    _fill_disk(monkeypatch, room=3)
    with pytest.raises(OSError):
        uio.atomic_write_json(path, {"mAP": 99.0, "pad": "x" * 100})
    monkeypatch.undo()
    assert path.read_text().strip() == '{\n  "mAP": 1.5\n}'


def test_checkpoint_carries_metadata(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, params={"a": 1}, epoch=3, step=7, model={"w": torch.arange(3)})
    blob = load_checkpoint(path)
    assert blob["epoch"] == 3 and blob["step"] == 7 and blob["params"] == {"a": 1}
    assert {"python", "numpy", "torch"} <= set(blob["rng"])
    assert isinstance(blob["commit"], str) and blob["commit"]
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
