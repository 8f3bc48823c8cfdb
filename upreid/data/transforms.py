"""Image transforms: fine-tuning (BoT recipe), testing, and pre-training views (LUPerson's MoCo
recipe, docs/METHOD.md: no colour jitter), built from ``torchvision.transforms.v2``.

Every transform takes a PIL image and returns a plain float32 ``(3, H, W)`` tensor, ImageNet
normalised. The random steps draw from torch's global RNG, so ``torch.manual_seed`` and loader
worker seeding make them reproducible as for any torch op.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2

from upreid.params import PretrainParams

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

CROP_SCALE = (0.2, 1.0)  # RandomResizedCrop: fraction of the image area
CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop: aspect (width / height)
BLUR_SIGMA = (0.1, 2.0)  # Gaussian blur: sigma drawn uniformly from this range
BLUR_HEIGHT = 256  # the height at which ``blur_sigma`` holds when it scales with the image


def _rgb(img: Image.Image) -> Image.Image:
    """Three channels whatever the file's mode (grey, palette, RGBA)."""
    return img if img.mode == "RGB" else img.convert("RGB")


def _to_float() -> list[v2.Transform]:
    """PIL ``(H, W)`` RGB -> float32 ``(3, H, W)`` in [0, 1]."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def _normalize() -> list[v2.Transform]:
    """ImageNet mean/std, then a plain tensor (no ``tv_tensors.Image`` reaches the loader)."""
    return [v2.Normalize(MEAN, STD), v2.ToPureTensor()]


def test_transform(height: int, width: int) -> v2.Compose:
    """Resize to ``(height, width)`` (bicubic, antialiased), tensor, ImageNet normalisation."""
    return v2.Compose(
        [
            v2.Lambda(_rgb, Image.Image),
            v2.Resize((height, width), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            *_to_float(),
            *_normalize(),
        ]
    )


def train_transform(height: int, width: int, erasing: float = 0.5) -> v2.Compose:
    """BoT's recipe: resize, flip, pad 10 and random crop, normalise, random erasing.

    The zero padding is 10 px at 256 x 128 and scales with the height; random erasing (Zhong et
    al.: 2-33 % of the area, aspect 0.3-3.3, value 0) applies with probability ``erasing``.
    """
    pad = max(1, round(10 * height / 256))
    return v2.Compose(
        [
            v2.Lambda(_rgb, Image.Image),
            v2.Resize((height, width), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            *_to_float(),
            v2.RandomHorizontalFlip(p=0.5),
            v2.Pad(pad),
            v2.RandomCrop((height, width)),
            *_normalize(),
            v2.RandomErasing(p=erasing),
        ]
    )


def blur_kernel(height: int) -> int:
    """Odd Gaussian kernel about a tenth of the image height (at least 3)."""
    return max(3, (height // 10) | 1)


def pretrain_augment(
    height: int,
    width: int,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    sigma: tuple[float, float] = BLUR_SIGMA,
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    jitter_p: float = 0.8,
) -> v2.Compose:
    """One augmented view (x_q or x_k): LUPerson's MoCo v2 recipe without colour jitter.

    RandomResizedCrop to ``(height, width)`` (``scale`` of the area, aspect in ``ratio``,
    bicubic), colour jitter p ``jitter_p`` when ``jitter`` (brightness, contrast, saturation,
    hue) is not all 0, grayscale p 0.2, Gaussian blur p 0.5 (sigma uniform in ``sigma``),
    horizontal flip, normalise, random erasing p 0.5.
    """
    color = [v2.RandomApply([v2.ColorJitter(*jitter)], p=jitter_p)] if any(jitter) else []
    return v2.Compose(
        [
            v2.Lambda(_rgb, Image.Image),
            v2.RandomResizedCrop(
                (height, width),
                scale=scale,
                ratio=ratio,
                interpolation=v2.InterpolationMode.BICUBIC,
                antialias=True,
            ),
            *_to_float(),
            *color,
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(blur_kernel(height), sigma=sigma)], p=0.5),
            v2.RandomHorizontalFlip(p=0.5),
            *_normalize(),
            v2.RandomErasing(p=0.5),
        ]
    )


class PretrainViews:
    """``(x_o, x_q, x_k)``: the original (resized, normalised) and two independent views, each
    float32 ``(3, height, width)``; the keyword arguments are :func:`pretrain_augment`'s."""

    def __init__(
        self,
        height: int,
        width: int,
        scale: tuple[float, float] = CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        sigma: tuple[float, float] = BLUR_SIGMA,
        jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        jitter_p: float = 0.8,
    ) -> None:
        self.original = test_transform(height, width)
        self.augment = pretrain_augment(
            height, width, scale=scale, ratio=ratio, sigma=sigma, jitter=jitter, jitter_p=jitter_p
        )

    @classmethod
    def from_params(cls, pp: PretrainParams) -> PretrainViews:
        """The views of the ``pretrain`` section: its crop ranges and blur, the blur's sigma
        scaled by ``height / 256`` when ``blur_relative`` (LUPerson's relative strength)."""
        lo, hi = pp.blur_sigma
        if pp.blur_relative:
            lo, hi = lo * pp.height / BLUR_HEIGHT, hi * pp.height / BLUR_HEIGHT
        return cls(
            pp.height,
            pp.width,
            scale=pp.crop_scale,
            ratio=pp.crop_ratio,
            sigma=(lo, hi),
            jitter=pp.color_jitter,
            jitter_p=pp.color_jitter_p,
        )

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.original(img), self.augment(img), self.augment(img)
