"""The ResNet trunk: torchvision's names, shapes and outputs, last stride, weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from upreid.models.backbone import (
    BACKBONES,
    FEATURE_DIMS,
    STAGE_DIMS,
    OnePixelSafeConv2d,
    ResNetTrunk,
    build_backbone,
    load_backbone_file,
    normalize_backbone_keys,
    set_last_stride,
)

ARCHS = sorted(BACKBONES)


def _reference(arch: str, last_stride: int) -> tvm.ResNet:
    """torchvision's ResNet with the re-ID stride set in its ``layer4``."""
    net = BACKBONES[arch](weights=None)
    set_last_stride(net.layer4, last_stride)
    return net


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_keys_and_shapes_equal_torchvision(arch: str) -> None:
    ours = build_backbone(arch).state_dict()
    theirs = BACKBONES[arch](weights=None).state_dict()
    assert list(ours) == [k for k in theirs if not k.startswith("fc.")]
    assert list(ours)[:2] == ["conv1.weight", "bn1.weight"]
    assert "layer1.0.conv1.weight" in ours and "layer4.0.downsample.0.weight" in ours
    for key, value in ours.items():
        assert value.shape == theirs[key].shape, key


def test_trunk_has_no_pooling_or_classifier() -> None:
    trunk = build_backbone("resnet18")
    assert not hasattr(trunk, "fc") and not hasattr(trunk, "avgpool")
    assert [name for name, _ in trunk.named_children()] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]


@pytest.mark.parametrize("arch", ["resnet10", "resnet18", "resnet50"])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_output_equals_torchvision_with_the_same_weights(arch: str, last_stride: int) -> None:
    torch.manual_seed(0)
    ref = _reference(arch, last_stride).eval()
    trunk = build_backbone(arch, last_stride=last_stride).eval()
    trunk.load_state_dict(normalize_backbone_keys(ref.state_dict()))
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        got = trunk(x)
        want = nn.Sequential(*list(ref.children())[:-2])(x)  # without avgpool and fc
    assert got.shape == (2, FEATURE_DIMS[arch], *((4, 2) if last_stride == 1 else (2, 1)))
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_last_stride_one_doubles_the_map_and_stages_have_the_listed_widths(arch: str) -> None:
    x = torch.randn(1, 3, 128, 64)
    for last_stride, size in ((2, (4, 2)), (1, (8, 4))):
        trunk = build_backbone(arch, last_stride).eval()
        with torch.no_grad():
            h = trunk.stem(x)
            assert h.shape == (1, 64, 32, 16)
            widths = []
            for layer in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
                h = layer(h)
                widths.append(h.shape[1])
        assert tuple(widths) == STAGE_DIMS[arch]
        assert h.shape[-2:] == size and trunk.out_channels == FEATURE_DIMS[arch]
        assert trunk.arch == arch


def test_resnet10_is_resnet18_with_one_block_per_stage() -> None:
    r10, r18 = build_backbone("resnet10"), build_backbone("resnet18")
    for name in ("layer1", "layer2", "layer3", "layer4"):
        assert len(getattr(r10, name)) == 1 and len(getattr(r18, name)) == 2
    ten, eighteen = r10.state_dict(), r18.state_dict()
    assert set(ten) < set(eighteen)  # the first block of each stage, under the same names
    assert all(ten[k].shape == eighteen[k].shape for k in ten)
    with pytest.raises(ValueError, match="no pre-trained weights"):
        BACKBONES["resnet10"](weights="IMAGENET1K_V1")


def test_seeded_build_is_reproducible_and_uses_torchvision_init() -> None:
    torch.manual_seed(0)
    first = build_backbone("resnet50").state_dict()
    torch.manual_seed(0)
    again = build_backbone("resnet50").state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    torch.manual_seed(1)
    other = build_backbone("resnet50").state_dict()
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])
    w = first["layer3.2.conv2.weight"]  # (256, 256, 3, 3): He normal, fan out = 256 * 9
    assert abs(float(w.std()) / (2 / (256 * 9)) ** 0.5 - 1) < 0.05
    assert torch.equal(first["layer2.1.bn3.weight"], torch.ones(512))
    assert torch.equal(first["layer2.1.bn3.bias"], torch.zeros(512))


def test_loads_a_torchvision_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    theirs = tvm.resnet18(weights=None).state_dict()  # with fc.*, which is dropped
    path = tmp_path / "resnet18.pth"
    torch.save(theirs, path)
    trunk = build_backbone("resnet18", last_stride=1)
    loaded = load_backbone_file(trunk, path)
    assert "fc.weight" not in loaded
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_loads_moco_keys_and_rejects_missing_weights(tmp_path: Path) -> None:
    trunk = build_backbone("resnet18")
    moco = {f"module.encoder_q.{k}": v + 1 for k, v in trunk.state_dict().items()}
    moco.update({f"module.encoder_k.{k}": v for k, v in trunk.state_dict().items()})
    path = tmp_path / "moco.pth.tar"
    torch.save({"state_dict": moco}, path)
    fresh = build_backbone("resnet18")
    load_backbone_file(fresh, path)
    assert torch.equal(fresh.conv1.weight, trunk.conv1.weight + 1)
    partial = {k: v for k, v in trunk.state_dict().items() if not k.startswith("layer4.")}
    torch.save(partial, path)
    with pytest.raises(ValueError, match="do not fit resnet18: missing .*layer4"):
        load_backbone_file(fresh, path)


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="resnet18.*resnet34.*resnet50"):
        ResNetTrunk("resnet101")


def _weight_grad(conv: nn.Conv2d, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(x)
    y.float().square().sum().backward()
    assert conv.weight.grad is not None
    return conv.weight.grad.clone()


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_conv_weight_grad_under_cpu_bf16_matches_fp32(channels_last: bool) -> None:
    """Every size from 1 to 6 px on either side, strides 1-3, kernels 1 and 3: the trunk's
    convolution's bf16 weight gradient is within bf16 error of float32's. One-pixel outputs are
    the case oneDNN's bf16 kernel gets wrong (checked here too, where this CPU shows it)."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    raw_wrong = 0
    for stride in (1, 2, 3):
        for k in (1, 3):
            conv = nn.Conv2d(16, 32, k, stride, k // 2, bias=False).to(memory_format=fmt)
            for h in range(1, 7):
                for w in range(1, 7):
                    x = torch.randn(8, 16, h, w).contiguous(memory_format=fmt)
                    want = _weight_grad(conv, x, bf16=False)
                    conv.__class__ = nn.Conv2d
                    raw_wrong += _relative_error(_weight_grad(conv, x, bf16=True), want) > 0.05
                    conv.__class__ = OnePixelSafeConv2d
                    got = _weight_grad(conv, x, bf16=True)
                    assert _relative_error(got, want) < 0.05, (stride, k, h, w)
    print(f"oneDNN's own bf16 weight gradient was wrong in {raw_wrong} of 144 cases here")


def test_trunk_trains_in_cpu_bf16_on_16px_wide_inputs() -> None:
    """A 32x16 input reaches layer4's strided convolution one pixel wide: every convolution's
    bf16 weight gradient stays finite and within bf16's error of float32's (measured: at most
    0.45 in relative norm through the whole untrained trunk; without the guard, layer4.0.conv1's
    was 3.4e3, inf or NaN for 3 of 4 seeds here). The guard adds no names or parameters."""
    torch.manual_seed(0)
    trunk = build_backbone("resnet18")
    assert all(type(m) is not nn.Conv2d for m in trunk.modules())
    assert isinstance(trunk.layer4[0].conv1, OnePixelSafeConv2d)
    x = torch.randn(8, 3, 32, 16)
    trunk.zero_grad()
    trunk(x).square().mean().backward()
    want = {n: p.grad.clone() for n, p in trunk.named_parameters() if p.grad is not None}
    trunk.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = trunk(x)
    y.float().square().mean().backward()
    for name, p in trunk.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("conv1.weight") or name.endswith("conv2.weight"):
            error = float((p.grad - want[name]).norm() / want[name].norm())
            assert error < 1.0, (name, error)
