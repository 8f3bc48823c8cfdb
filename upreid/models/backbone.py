"""ResNet trunks shared by pre-training and every fine-tuning method.

The trunk is torchvision's ResNet without ``avgpool`` and ``fc``, so it keeps torchvision's
parameter names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``): torchvision ImageNet files, our
pre-training exports and public MoCo/LUPerson checkpoints (``module.encoder_q.*``) all load
through :func:`normalize_backbone_keys`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torchvision.models import ResNet, resnet18, resnet34, resnet50
from torchvision.models.resnet import BasicBlock


def resnet10(*, weights: None = None, **kwargs: object) -> ResNet:
    """ResNet-10: torchvision's ResNet with one basic block per stage (ResNet-18 has two), the
    same parameter names; no ImageNet file exists for it. About half ResNet-18's cost per image
    (``benchmarks/bench_finetune.py --arch``): the small profiles' trunk."""
    if weights is not None:
        raise ValueError("resnet10 has no pre-trained weights")
    return ResNet(BasicBlock, [1, 1, 1, 1], **kwargs)  # type: ignore[arg-type]


BACKBONES: dict[str, Callable[..., ResNet]] = {  # name -> torchvision constructor
    "resnet10": resnet10,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
}
FEATURE_DIMS = {"resnet10": 512, "resnet18": 512, "resnet34": 512, "resnet50": 2048}
STAGE_DIMS = {  # output channels of layer1..layer4
    "resnet10": (64, 128, 256, 512),
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
}
TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
TRUNK_MODULES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _check_arch(arch: str) -> None:
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; valid are {sorted(BACKBONES)}")


def _torchvision_resnet(arch: str) -> ResNet:
    """Untrained torchvision ResNet whose classifier is empty (``num_classes=0``).

    The empty ``fc`` draws no random numbers, so under a given seed the trunk's weights are
    those of torchvision's initialisation applied to the trunk alone (the same values as the
    project's earlier in-package ResNet); a 1000-way ``fc`` would shift the RNG first.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        return BACKBONES[arch](weights=None, num_classes=0)


class OnePixelSafeConv2d(nn.Conv2d):
    """torchvision's ``Conv2d`` with one bypass: under CPU autocast, a strided convolution
    whose output is one pixel wide or tall runs in float32.

    PyTorch 2.14's oneDNN bfloat16 kernel computes that case's weight gradient wrongly (values up
    to 1e37, inf or NaN from finite inputs, on AVX-512 BF16 and AMX alike; the output and the
    input gradient are right). It happens wherever a map reaches a strided convolution one pixel
    wide: an image or patch 16 px wide or less at ``layer4``, e.g. UP-ReID's 16 px patches of a
    64x32 image. The class keeps ``Conv2d``'s parameters and names; CUDA and fp32 never branch.
    ``tests/models/test_backbone.py`` compares the weight gradients with float32's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and self.stride != (1, 1) and torch.is_autocast_enabled("cpu"):
            pads = (0, 0) if isinstance(self.padding, str) else self.padding  # "valid"
            out = [
                (size + 2 * pad - dil * (k - 1) - 1) // s + 1
                for size, pad, dil, k, s in zip(
                    x.shape[-2:], pads, self.dilation, self.kernel_size, self.stride, strict=True
                )
            ]
            if min(out) == 1:
                with torch.autocast("cpu", enabled=False):
                    return super().forward(x.float())
        return super().forward(x)


def set_last_stride(layer: nn.Sequential, stride: int) -> None:
    """Set the stride of the first block of a ResNet stage (1 keeps 2x spatial resolution).

    The strided convolution is ``conv2`` in a bottleneck (torchvision's v1.5) and ``conv1`` in a
    basic block; the block's downsample shortcut gets the same stride.
    """
    block = layer[0]
    conv = block.conv2 if hasattr(block, "conv3") else block.conv1  # bottleneck vs basic
    cast(nn.Conv2d, conv).stride = (stride, stride)
    downsample = cast("nn.Sequential | None", block.downsample)
    if downsample is not None:
        cast(nn.Conv2d, downsample[0]).stride = (stride, stride)


class ResNetTrunk(nn.Module):
    """ResNet without pooling and classifier: ``(B, 3, H, W) -> (B, C, H/s, W/s)``.

    ``s`` is 32, or 16 with ``last_stride=1`` (the re-ID change to ``layer4``); ``C`` is
    ``out_channels``. The modules are torchvision's, held under torchvision's names.
    """

    # registered in __init__ by name (TRUNK_MODULES); declared for the type checker
    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    relu: nn.ReLU
    maxpool: nn.MaxPool2d
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, arch: str, last_stride: int = 2) -> None:
        super().__init__()
        _check_arch(arch)
        self.arch = arch
        self.out_channels = FEATURE_DIMS[arch]
        net = _torchvision_resnet(arch)
        for name in TRUNK_MODULES:  # registration order fixes the state-dict key order
            setattr(self, name, getattr(net, name))
        set_last_stride(self.layer4, last_stride)
        for module in self.modules():  # no new parameters, names or random draws
            if type(module) is nn.Conv2d:
                module.__class__ = OnePixelSafeConv2d

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, 64, H/4, W/4)``: conv1, BN, ReLU, max pooling."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_backbone(arch: str, last_stride: int = 2) -> ResNetTrunk:
    """Untrained :class:`ResNetTrunk` of ``arch`` (``resnet10``, ``resnet18``, ``resnet34``,
    ``resnet50``)."""
    return ResNetTrunk(arch, last_stride)


def normalize_backbone_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trunk weights from any supported format, with torchvision names.

    Accepts: a torchvision state dict (``fc.*`` dropped), our exports (``backbone.*``), and
    public MoCo checkpoints (``module.encoder_q.*``; the key encoder and the MLP are dropped).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in (
            "module.encoder_q.",
            "encoder_q.",
            "module.backbone.",
            "backbone.",
            "module.",
            "",
        ):
            if key.startswith(prefix):
                name = key[len(prefix) :]
                break
        if key.startswith(("module.encoder_k.", "encoder_k.", "queue")):
            continue
        if name.startswith(TRUNK_PREFIXES):
            out[name] = value
    if not out:
        raise ValueError(
            "no ResNet trunk weights found (expected keys such as conv1.weight, "
            "backbone.conv1.weight or module.encoder_q.conv1.weight)"
        )
    return out


def load_backbone_file(trunk: ResNetTrunk, path: str | Path) -> dict[str, torch.Tensor]:
    """Load trunk weights from ``path`` into ``trunk``; return the weights loaded.

    ``path`` may hold a bare state dict, or a dict with ``state_dict`` / ``backbone`` / ``model``.
    Every trunk parameter must be present with the right shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=True)  # data, never code
    for key in ("backbone", "state_dict", "model"):
        if isinstance(blob, Mapping) and isinstance(blob.get(key), Mapping):
            blob = (
                blob[key]
                if key != "backbone"
                else {f"backbone.{k}": v for k, v in blob[key].items()}
            )
            break
    if not isinstance(blob, Mapping):
        raise ValueError(f"{path}: not a state dict (a {type(blob).__name__})")
    try:
        weights = normalize_backbone_keys(blob)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    own = trunk.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in weights.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if wrong:
        raise ValueError(
            f"{path}: weights do not fit {trunk.arch}: shapes differ for "
            f"{wrong[:3]} (file vs model; is the file for another ResNet?)"
        )
    missing, unexpected = trunk.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit {trunk.arch}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (is the file for another ResNet?)"
        )
    return weights
