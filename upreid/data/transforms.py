"""Image transforms: fine-tuning (BoT recipe), testing, and pre-training views (LUPerson's MoCo
recipe, METHOD.md: no colour jitter)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision import transforms as T

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def test_transform(height: int, width: int) -> Callable[[Any], torch.Tensor]:
    """Resize, tensor, ImageNet normalisation."""
    return T.Compose([
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])


def train_transform(height: int, width: int, erasing: float = 0.5) -> Callable[[Any], torch.Tensor]:
    """BoT's recipe: resize, flip, pad 10 and random crop, normalise, random erasing."""
    pad = max(1, round(10 * height / 256))  # 10 px at 256x128, scaled with the image
    return T.Compose([
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.Pad(pad),
        T.RandomCrop((height, width)),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
        T.RandomErasing(p=erasing, value=0),
    ])


def pretrain_augment(height: int, width: int) -> Callable[[Any], torch.Tensor]:
    """One augmented view (x_q or x_k): LUPerson's MoCo v2 recipe without colour jitter.

    RandomResizedCrop (scale 0.2-1), grayscale p 0.2, Gaussian blur p 0.5 (sigma 0.1-2),
    horizontal flip, normalise, random erasing p 0.5.
    """
    kernel = max(3, (height // 10) | 1)  # odd kernel about a tenth of the height
    return T.Compose([
        T.RandomResizedCrop((height, width), scale=(0.2, 1.0),
                            interpolation=T.InterpolationMode.BICUBIC),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
        T.RandomErasing(p=0.5, value=0),
    ])


class PretrainViews:
    """``(x_o, x_q, x_k)``: the original (resized, normalised) and two independent views."""

    def __init__(self, height: int, width: int) -> None:
        self.original = test_transform(height, width)
        self.augment = pretrain_augment(height, width)

    def __call__(self, img: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.original(img), self.augment(img), self.augment(img)
