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


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
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
