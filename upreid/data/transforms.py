"""Image transforms: fine-tuning (BoT recipe), testing, and pre-training views (LUPerson's MoCo
recipe, METHOD.md: no colour jitter)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# Written with torch's RNG (so seeding and loader workers behave as for any torch op) and
# without torchvision, whose import costs each stage process about 1.3 s. Each step follows
# torchvision's algorithm of the same name; tests/data/test_transforms.py compares them.


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high))


def _randint(high: int) -> int:
    """Uniform in ``[0, high)``."""
    return int(torch.randint(0, high, (1,)))


def to_tensor(img: Image.Image, height: int, width: int,
              box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Bicubic resize of ``img`` (or of its ``box``: left, top, right, bottom) to
    ``(3, height, width)`` in [0, 1]."""
    if box is not None:
        img = img.crop(box)
    img = img.resize((width, height), Image.BICUBIC)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    return x.flip(-1) if torch.rand(1) < p else x


def pad_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad ``pad`` pixels on every side, then crop back to the size at a random place."""
    _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    top, left = _randint(2 * pad + 1), _randint(2 * pad + 1)
    return padded[:, top:top + h, left:left + w]


def random_erase(x: torch.Tensor, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                 ratio: Sequence[float] = (0.3, 3.3), value: float = 0.0) -> torch.Tensor:
    """Zhong et al.'s random erasing: with probability ``p`` one rectangle of ``scale`` of the
    area and aspect ``ratio`` is set to ``value`` (ten tries to fit, else unchanged)."""
    if torch.rand(1) >= p:
        return x
    _, h, w = x.shape
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        area = h * w * _uniform(*scale)
        aspect = math.exp(_uniform(*log_ratio))
        eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if eh < h and ew < w:
            top, left = _randint(h - eh + 1), _randint(w - ew + 1)
            x = x.clone()
            x[:, top:top + eh, left:left + ew] = value
            return x
    return x


def resized_crop_box(width: int, height: int, scale: Sequence[float] = (0.2, 1.0),
                     ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom) in a ``width`` x ``height`` image:
    ``scale`` of the area, aspect in ``ratio``; ten tries, then the largest central crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(*scale)
        aspect = math.exp(_uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = _randint(height - h + 1), _randint(width - w + 1)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def random_grayscale(x: torch.Tensor, p: float = 0.2) -> torch.Tensor:
    if torch.rand(1) >= p:
        return x
    gray = 0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]  # ITU-R 601 luma, (H, W)
    return gray.expand(3, -1, -1).clone()


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(3, H, W)`` with reflect padding (odd ``kernel``)."""
    half = (kernel - 1) / 2
    t = torch.linspace(-half, half, kernel)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    k1 = k1 / k1.sum()
    weight = (k1[:, None] * k1[None, :]).expand(3, 1, kernel, kernel)  # (3, 1, k, k)
    pad = kernel // 2
    out = F.pad(x[None], (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(out, weight, groups=3)[0]


def test_transform(height: int, width: int) -> Callable[[Image.Image], torch.Tensor]:
    """Resize (bicubic), tensor, ImageNet normalisation."""
    def apply(img: Image.Image) -> torch.Tensor:
        return normalize(to_tensor(img, height, width))
    return apply


def train_transform(height: int, width: int,
                    erasing: float = 0.5) -> Callable[[Image.Image], torch.Tensor]:
    """BoT's recipe: resize, flip, pad 10 and random crop, normalise, random erasing."""
    pad = max(1, round(10 * height / 256))  # 10 px at 256x128, scaled with the image

    def apply(img: Image.Image) -> torch.Tensor:
        x = pad_crop(hflip(to_tensor(img, height, width)), pad)
        return random_erase(normalize(x), p=erasing)
    return apply


def pretrain_augment(height: int, width: int) -> Callable[[Image.Image], torch.Tensor]:
    """One augmented view (x_q or x_k): LUPerson's MoCo v2 recipe without colour jitter.

    RandomResizedCrop (scale 0.2-1), grayscale p 0.2, Gaussian blur p 0.5 (sigma 0.1-2),
    horizontal flip, normalise, random erasing p 0.5.
    """
    kernel = max(3, (height // 10) | 1)  # odd kernel about a tenth of the height

    def apply(img: Image.Image) -> torch.Tensor:
        x = to_tensor(img, height, width, box=resized_crop_box(*img.size))
        x = random_grayscale(x)
        if torch.rand(1) < 0.5:
            x = gaussian_blur(x, kernel, _uniform(0.1, 2.0))
        return random_erase(normalize(hflip(x)))
    return apply


class PretrainViews:
    """``(x_o, x_q, x_k)``: the original (resized, normalised) and two independent views."""

    def __init__(self, height: int, width: int) -> None:
        self.original = test_transform(height, width)
        self.augment = pretrain_augment(height, width)

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.original(img), self.augment(img), self.augment(img)
