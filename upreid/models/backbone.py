"""ResNet trunks shared by pre-training and every fine-tuning method.

The trunk keeps torchvision's parameter names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so
torchvision ImageNet files, our pre-training exports and public MoCo/LUPerson checkpoints
(``module.encoder_q.*``) all load through :func:`normalize_backbone_keys`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from upreid.models.resnet import LAYOUTS, init_resnet, make_stage

BACKBONES = LAYOUTS  # name -> (block type, blocks per stage)
FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
STAGE_DIMS = {  # output channels of layer1..layer4
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
}
TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def _check_arch(arch: str) -> None:
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; valid are {sorted(BACKBONES)}")


def set_last_stride(layer: nn.Sequential, stride: int) -> None:
    """Set the stride of the first block of a ResNet stage (1 keeps 2x spatial resolution)."""
    block = layer[0]
    conv = block.conv2 if hasattr(block, "conv3") else block.conv1  # bottleneck vs basic
    conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


class ResNetTrunk(nn.Module):
    """ResNet without pooling and classifier: ``(B, 3, H, W) -> (B, C, H/s, W/s)``."""

    def __init__(self, arch: str, last_stride: int = 2) -> None:
        super().__init__()
        _check_arch(arch)
        block, depths = BACKBONES[arch]
        self.arch = arch
        self.out_channels = FEATURE_DIMS[arch]
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch, stages = 64, []
        for planes, blocks, stride in zip((64, 128, 256, 512), depths, (1, 2, 2, last_stride),
                                          strict=True):
            stages.append(make_stage(block, in_ch, planes, blocks, stride))
            in_ch = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        init_resnet(self)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_backbone(arch: str, last_stride: int = 2) -> ResNetTrunk:
    return ResNetTrunk(arch, last_stride)


def normalize_backbone_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trunk weights from any supported format, with torchvision names.

    Accepts: a torchvision state dict (``fc.*`` dropped), our exports (``backbone.*``), and
    public MoCo checkpoints (``module.encoder_q.*``; the key encoder and the MLP are dropped).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.encoder_q.", "encoder_q.", "module.backbone.", "backbone.",
                       "module.", ""):
            if key.startswith(prefix):
                name = key[len(prefix):]
                break
        if key.startswith(("module.encoder_k.", "encoder_k.", "queue")):
            continue
        if name.startswith(TRUNK_PREFIXES):
            out[name] = value
    if not out:
        raise ValueError("no ResNet trunk weights found (expected keys such as conv1.weight, "
                         "backbone.conv1.weight or module.encoder_q.conv1.weight)")
    return out


def load_backbone_file(trunk: ResNetTrunk, path: str | Path) -> dict[str, torch.Tensor]:
    """Load trunk weights from ``path`` into ``trunk``; return the weights loaded.

    ``path`` may hold a bare state dict, or a dict with ``state_dict`` / ``backbone`` / ``model``.
    Every trunk parameter must be present with the right shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("backbone", "state_dict", "model"):
        if isinstance(blob, Mapping) and isinstance(blob.get(key), Mapping):
            blob = blob[key] if key != "backbone" else {f"backbone.{k}": v
                                                        for k, v in blob[key].items()}
            break
    weights = normalize_backbone_keys(blob)
    missing, unexpected = trunk.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit {trunk.arch}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return weights
