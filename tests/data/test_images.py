"""A huge image is skipped and counted like a corrupt one, never decoded."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from upreid.data.dataset import drop_bad_records
from upreid.data.images import BadImage, read_image
from upreid.data.records import Record


@pytest.mark.parametrize("side", [40, 60])  # over the limit (warning) and over twice it (error)
def test_a_decompression_bomb_is_a_bad_image(
    side: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("RGB", (side, side)).save(tmp_path / "huge.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "fine.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 = 1.6x, 60x60 = 3.6x
    with pytest.raises(BadImage, match="too large"):
        read_image(str(tmp_path / "huge.png"))
    good, bad = drop_bad_records(
        [Record(str(tmp_path / n), 1, 1) for n in ("huge.png", "fine.png")]
    )
    assert [Path(r.path).name for r in good] == ["fine.png"] and len(bad) == 1
