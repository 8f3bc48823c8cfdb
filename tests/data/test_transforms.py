"""The transform recipes: shapes, normalisation, seeding, and how often each random step acts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from upreid.data import transforms as T

H, W = 64, 32
MEAN = torch.tensor(T.MEAN).view(3, 1, 1)
STD = torch.tensor(T.STD).view(3, 1, 1)


@pytest.fixture()
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (50, 23, 3), dtype=np.uint8))


def _half_black_half_white(height: int = H, width: int = W) -> Image.Image:
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[:, width // 2 :] = 255
    return Image.fromarray(arr)


def _erased(x: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` mask of pixels zero in every channel (only erasing makes such pixels)."""
    return (x == 0).all(dim=0)


def _all_transforms() -> dict[str, v2.Compose]:
    return {
        "test": T.test_transform(H, W),
        "train": T.train_transform(H, W),
        "pretrain": T.pretrain_augment(H, W),
    }


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_every_transform_gives_a_plain_float32_tensor(image: Image.Image, mode: str) -> None:
    img = image.convert(mode)
    outs = [f(img) for f in _all_transforms().values()] + list(T.PretrainViews(H, W)(img))
    for x in outs:
        assert type(x) is torch.Tensor  # not a tv_tensors.Image subclass
        assert x.dtype == torch.float32 and x.shape == (3, H, W)
        assert torch.isfinite(x).all()


def test_normalisation_of_a_constant_image() -> None:
    img = Image.new("RGB", (40, 90), (255, 0, 128))
    want = (torch.tensor([255, 0, 128]).view(3, 1, 1) / 255 - MEAN) / STD
    got = T.test_transform(H, W)(img)
    assert torch.allclose(got, want.expand(3, H, W), atol=1e-5)


def test_test_transform_is_deterministic_and_leaves_the_rng_alone(image: Image.Image) -> None:
    f = T.test_transform(H, W)
    state = torch.get_rng_state()
    first, again = f(image), f(image)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again)
    assert not torch.equal(first, T.test_transform(H + 2, W)(image)[:, :H])


@pytest.mark.parametrize("name", ["train", "pretrain"])
def test_random_transforms_repeat_under_a_seed(image: Image.Image, name: str) -> None:
    f = _all_transforms()[name]
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(torch.stack([f(image) for _ in range(4)]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def _padded_crops(base: torch.Tensor, pad: int) -> list[tuple[bool, int, int, torch.Tensor]]:
    """Every (flip, top, left) crop of ``base`` padded with black (normalised) pixels."""
    _, h, w = base.shape
    out = []
    for flip in (False, True):
        padded = (-MEAN / STD).expand(3, h + 2 * pad, w + 2 * pad).clone()
        padded[:, pad : pad + h, pad : pad + w] = base.flip(-1) if flip else base
        out += [
            (flip, top, left, padded[:, top : top + h, left : left + w])
            for top in range(2 * pad + 1)
            for left in range(2 * pad + 1)
        ]
    return out


def test_train_transform_is_a_maybe_flipped_shifted_crop_of_the_padded_image(
    image: Image.Image,
) -> None:
    pad = max(1, round(10 * H / 256))
    crops = _padded_crops(T.test_transform(H, W)(image), pad)
    seen_flip, seen_offsets = set(), set()
    f = T.train_transform(H, W, erasing=0.0)
    for seed in range(150):
        torch.manual_seed(seed)
        got = f(image)
        match = [c[:3] for c in crops if torch.allclose(got, c[3], atol=1e-5)]
        assert match, seed
        seen_flip.add(match[0][0])
        seen_offsets.add(match[0][1:])
    assert seen_flip == {False, True}
    assert len(seen_offsets) == (2 * pad + 1) ** 2  # every offset occurs


def test_train_flip_and_erasing_happen_about_half_the_time() -> None:
    img = _half_black_half_white()
    f = T.train_transform(H, W)
    torch.manual_seed(0)
    outs = [f(img) for _ in range(300)]
    flipped = [float(x[0, :, : W // 2].mean()) > float(x[0, :, W // 2 :].mean()) for x in outs]
    erased = [bool(_erased(x).any()) for x in outs]
    assert 0.38 < np.mean(flipped) < 0.62
    assert 0.38 < np.mean(erased) < 0.62
    torch.manual_seed(0)
    assert not any(_erased(T.train_transform(H, W, erasing=0.0)(img)).any() for _ in range(50))


def test_erasing_zeroes_one_rectangle_of_the_allowed_size() -> None:
    img = Image.new("RGB", (W, H), (200, 30, 90))
    f = T.train_transform(H, W, erasing=1.0)
    for seed in range(30):
        torch.manual_seed(seed)
        mask = _erased(f(img))
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert len(rows) > 0, seed
        h = int(rows.max() - rows.min() + 1)
        w = int(cols.max() - cols.min() + 1)
        assert len(rows) == h * w  # one filled rectangle, in every channel
        assert 0.015 <= h * w / (H * W) <= 0.36, (seed, h, w)
        assert 0.2 <= h / w <= 4.5, (seed, h, w)


def test_pretrain_grayscale_and_erasing_rates(image: Image.Image) -> None:
    f = T.pretrain_augment(H, W)
    torch.manual_seed(0)
    outs = [f(image) for _ in range(300)]
    grey = []
    for x in outs:
        kept = (x * STD + MEAN)[:, ~_erased(x)]  # (3, N) pixels outside an erased rectangle
        grey.append(torch.allclose(kept, kept[:1].expand(3, -1), atol=1e-5))
    erased = [bool(_erased(x).any()) for x in outs]
    assert 0.12 < np.mean(grey) < 0.28  # p 0.2
    assert 0.38 < np.mean(erased) < 0.62  # p 0.5


def test_pretrain_crop_scale_and_ratio_are_arguments() -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8))
    plain = T.test_transform(H, W)(img)

    def untouched(f: v2.Compose) -> int:
        """Views equal to the plain resized image (full crop, no grey/blur/flip/erase)."""
        torch.manual_seed(0)
        return sum(torch.allclose(f(img), plain, atol=1e-5) for _ in range(80))

    # the image is W/H = 1/2: only a crop of scale 1 and ratio 1/2 is the whole image
    assert untouched(T.pretrain_augment(H, W, scale=(1.0, 1.0), ratio=(0.5, 0.5))) > 0
    assert untouched(T.pretrain_augment(H, W)) == 0


def test_pretrain_blur_kernel_and_sigma() -> None:
    views = T.PretrainViews(256, 128, scale=(0.3, 0.9), sigma=(0.5, 1.5))
    blur = [t for t in views.augment.transforms if isinstance(t, v2.RandomApply)]
    assert len(blur) == 1 and blur[0].p == 0.5
    gauss = blur[0].transforms[0]
    assert list(gauss.kernel_size) == [25, 25] and list(gauss.sigma) == [0.5, 1.5]
    crop = next(t for t in views.augment.transforms if isinstance(t, v2.RandomResizedCrop))
    assert tuple(crop.scale) == (0.3, 0.9) and tuple(crop.ratio) == pytest.approx((3 / 4, 4 / 3))
    assert [T.blur_kernel(h) for h in (16, 64, 128, 384)] == [3, 7, 13, 39]


def test_pretrain_views_are_the_original_and_two_independent_views(image: Image.Image) -> None:
    views = T.PretrainViews(H, W)
    torch.manual_seed(3)
    first = views(image)
    torch.manual_seed(3)
    again = views(image)
    assert len(first) == 3 and [v.shape for v in first] == [(3, H, W)] * 3
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert torch.equal(first[0], T.test_transform(H, W)(image))
    assert not torch.equal(first[1], first[2])


def test_pretrain_views_from_params() -> None:
    """The ``pretrain`` keys reach the views: crop ranges, colour jitter (none when all 0) and
    the blur, whose sigma scales with the height when ``blur_relative``."""
    import dataclasses
    from pathlib import Path

    from upreid.params import load_params

    pp = load_params(Path(__file__).resolve().parents[2] / "params.yaml", "default").pretrain
    pp = dataclasses.replace(
        pp,
        height=64,
        width=32,
        crop_ratio=(0.375, 0.667),
        crop_scale=(0.3, 1.0),
        color_jitter=(0.0, 0.0, 0.0, 0.0),
        blur_relative=False,
    )
    plain = T.PretrainViews.from_params(pp).augment.transforms
    crop = next(t for t in plain if isinstance(t, v2.RandomResizedCrop))
    assert tuple(crop.ratio) == (0.375, 0.667) and tuple(crop.scale) == (0.3, 1.0)
    assert not any(
        isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], v2.ColorJitter) for t in plain
    )
    assert list(
        next(t for t in plain if isinstance(t, v2.RandomApply)).transforms[0].sigma
    ) == list(pp.blur_sigma)

    scaled = dataclasses.replace(
        pp,
        blur_relative=True,
        blur_sigma=(0.1, 2.0),
        color_jitter=(0.4, 0.4, 0.0, 0.0),
        color_jitter_p=0.6,
    )
    ts = T.PretrainViews.from_params(scaled).augment.transforms
    applied = [t for t in ts if isinstance(t, v2.RandomApply)]
    jitter, blur = applied[0], applied[1]
    assert isinstance(jitter.transforms[0], v2.ColorJitter) and jitter.p == 0.6
    assert jitter.transforms[0].brightness == pytest.approx((0.6, 1.4))
    assert jitter.transforms[0].saturation is None
    assert list(blur.transforms[0].sigma) == pytest.approx([0.1 / 4, 2.0 / 4])
