from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from upreid.models.backbone import build_backbone
from upreid.report.explain import activation_map, explain_png, find_trunk


def test_map_follows_the_activation() -> None:
    torch.manual_seed(0)
    trunk = build_backbone("resnet18")
    image = torch.randn(3, 64, 32)
    heat = activation_map(trunk, image)
    assert heat.shape == (64, 32)
    assert float(heat.min()) == 0.0 and float(heat.max()) == pytest.approx(1.0)
    with torch.no_grad():  # the hottest cell of the raw map is the hottest region of the output
        raw = trunk(image.unsqueeze(0)).sum(1)[0]
    r, c = divmod(int(raw.argmax()), raw.shape[1])
    cell = heat.reshape(raw.shape[0], 64 // raw.shape[0], raw.shape[1], 32 // raw.shape[1])
    assert cell[r, :, c, :].mean() >= cell.mean(dim=(1, 3)).max() - 1e-6


def test_find_trunk_and_png(tmp_path: Path) -> None:
    trunk = build_backbone("resnet18")
    model = nn.Sequential(nn.Identity(), trunk)
    assert find_trunk(model) is trunk
    with pytest.raises(ValueError, match="no ResNet trunk"):
        find_trunk(nn.Linear(2, 2))
    img = tmp_path / "a.jpg"
    Image.new("RGB", (32, 64), (200, 30, 30)).save(img)
    out = explain_png(
        {"moco": (trunk, 64, 32), "upreid": (trunk, 64, 32)}, [img], tmp_path / "fig8.png"
    )
    assert out.read_bytes()[:4] == b"\x89PNG"
