"""Models from the files this project writes or users bring, read as data (``weights_only``).

One loader serves evaluation, search, explain and export: a fine-tuned ``best.pt`` / ``last.pt``
gives its re-ID model (the test embedding), anything else with ResNet trunk weights (a
pre-training ``backbone.pt``, SpCL's ``model.pt``, a public MoCo/LUPerson checkpoint, a
torchvision state dict) gives the trunk with global average pooling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from upreid.models.backbone import ResNetTrunk, build_backbone, load_backbone_file


class PooledTrunk(nn.Module):
    """A trunk's globally average-pooled features: ``(B, 3, H, W) -> (B, C)``."""

    def __init__(self, trunk: ResNetTrunk) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk(x).mean(dim=(2, 3))


@dataclass
class LoadedModel:
    """A model in eval mode, its ResNet trunk, the input size it expects, and how to take the
    test embedding from its output."""

    model: nn.Module
    trunk: ResNetTrunk
    height: int
    width: int
    output: Callable[[Any], Tensor]
    method: str | None  # the fine-tuning method, None for a bare trunk


def read_blob(path: str | Path) -> Any:
    """A checkpoint file's contents without running any code from it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(path: str | Path, default_size: tuple[int, int] = (256, 128)) -> LoadedModel:
    """The model in ``path`` (see the module docstring); ``default_size`` is the input size of
    a file that does not record one."""
    blob = read_blob(path)
    meta = blob if isinstance(blob, Mapping) else {}
    if "method" in meta:
        from upreid.models.reid import build_reid_model

        model = build_reid_model(meta["method"], meta["arch"], meta["num_classes"])
        model.init_branches()
        model.load_state_dict(meta["model"])
        model.eval()
        return LoadedModel(
            model,
            model.backbone,
            meta["height"],
            meta["width"],
            lambda out: out.embedding,
            meta["method"],
        )
    trunk = build_backbone(meta.get("arch", "resnet50"))
    load_backbone_file(trunk, path)
    pooled = PooledTrunk(trunk).eval()
    height, width = meta.get("height", default_size[0]), meta.get("width", default_size[1])
    return LoadedModel(pooled, trunk, height, width, lambda out: out, None)
