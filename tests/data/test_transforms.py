"""Our transforms against torchvision's (the reference) and against their definitions."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from upreid.data import transforms as ours


@pytest.fixture()
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (50, 23, 3), dtype=np.uint8))


def _reference_test(height: int, width: int) -> T.Compose:
    return T.Compose([T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
                      T.ToTensor(), T.Normalize(ours.MEAN, ours.STD)])


def test_test_transform_equals_torchvision(image: Image.Image) -> None:
    got = ours.test_transform(32, 16)(image)
    want = _reference_test(32, 16)(image)
    assert got.shape == (3, 32, 16)
    assert torch.allclose(got, want, atol=1e-6)


def test_train_transform_is_a_shifted_maybe_flipped_crop_of_the_padded_image(
        image: Image.Image) -> None:
    base = TF.to_tensor(TF.resize(image, [32, 16], interpolation=T.InterpolationMode.BICUBIC))
    pad = 1  # round(10 * 32 / 256)
    seen_flip, seen_offsets = set(), set()
    for seed in range(40):
        torch.manual_seed(seed)
        got = ours.train_transform(32, 16, erasing=0.0)(image)
        matches = [(flip, top, left)
                   for flip in (False, True)
                   for top in range(2 * pad + 1) for left in range(2 * pad + 1)
                   if torch.allclose(got, TF.normalize(TF.pad(
                       base.flip(-1) if flip else base, pad)[:, top:top + 32, left:left + 16],
                       ours.MEAN, ours.STD), atol=1e-6)]
        assert matches, seed
        seen_flip.add(matches[0][0])
        seen_offsets.add(matches[0][1:])
    assert seen_flip == {False, True}
    assert len(seen_offsets) == 9  # every offset of the 3x3 range occurs


def test_random_erase_zeroes_one_rectangle_of_the_allowed_size() -> None:
    for seed in range(30):
        torch.manual_seed(seed)
        x = ours.random_erase(torch.ones(3, 64, 32), p=1.0)
        rows, cols = torch.nonzero(x[0] == 0, as_tuple=True)
        assert len(rows) > 0, seed
        h = int(rows.max() - rows.min() + 1)
        w = int(cols.max() - cols.min() + 1)
        assert len(rows) == h * w  # a filled rectangle
        assert torch.equal(x[1] == 0, x[0] == 0) and torch.equal(x[2] == 0, x[0] == 0)
        assert 0.015 <= h * w / (64 * 32) <= 0.36, (seed, h, w)
        assert 0.2 <= h / w <= 4.5, (seed, h, w)
    torch.manual_seed(0)
    assert torch.equal(ours.random_erase(torch.ones(3, 8, 8), p=0.0), torch.ones(3, 8, 8))


def test_resized_crop_box_respects_scale_and_ratio() -> None:
    areas = []
    for seed in range(200):
        torch.manual_seed(seed)
        left, top, right, bottom = ours.resized_crop_box(64, 128)
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 64 and 0 <= top < bottom <= 128
        assert 0.18 <= w * h / (64 * 128) <= 1.0
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
        areas.append(w * h / (64 * 128))
    assert min(areas) < 0.3 and max(areas) > 0.45  # the scale range is used


def test_resized_crop_box_falls_back_to_a_central_crop_when_nothing_fits() -> None:
    # a very tall image cannot hold a 3/4..4/3 crop of 20-100 % of its area: 10 tries fail
    torch.manual_seed(0)
    left, top, right, bottom = ours.resized_crop_box(4, 400, scale=(0.9, 1.0))
    assert (right - left, bottom - top) == (4, round(4 / (3 / 4)))
    assert top == (400 - 5) // 2


@pytest.mark.parametrize("kernel,sigma", [(3, 0.5), (7, 1.7)])
def test_gaussian_blur_equals_torchvision(kernel: int, sigma: float) -> None:
    x = torch.rand(3, 20, 11)
    want = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    assert torch.allclose(ours.gaussian_blur(x, kernel, sigma), want, atol=1e-5)


def test_grayscale_equals_torchvision() -> None:
    x = torch.rand(3, 9, 5)
    torch.manual_seed(0)
    got = ours.random_grayscale(x, p=1.0)
    assert torch.allclose(got, TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6)
    assert torch.equal(ours.random_grayscale(x, p=0.0), x)


def test_pretrain_views_shapes_and_seeded_determinism(image: Image.Image) -> None:
    views = ours.PretrainViews(32, 16)
    torch.manual_seed(3)
    first = views(image)
    torch.manual_seed(3)
    again = views(image)
    assert [v.shape for v in first] == [(3, 32, 16)] * 3
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert torch.allclose(first[0], _reference_test(32, 16)(image), atol=1e-6)
    assert not torch.equal(first[1], first[2])  # two independent views
    assert math.isfinite(float(first[1].sum()))
