"""Our ResNet trunk against torchvision's: names, shapes, initialisation and outputs."""

import pytest
import torch
from torchvision import models as tvm

from upreid.models.backbone import build_backbone, normalize_backbone_keys
from upreid.models.resnet import Bottleneck

TORCHVISION = {"resnet18": tvm.resnet18, "resnet34": tvm.resnet34, "resnet50": tvm.resnet50}


@pytest.mark.parametrize("arch", sorted(TORCHVISION))
def test_trunk_state_dict_matches_torchvision(arch: str) -> None:
    ours = build_backbone(arch).state_dict()
    theirs = normalize_backbone_keys(TORCHVISION[arch](weights=None).state_dict())
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].shape == value.shape, key


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_trunk_output_equals_torchvision_with_same_weights(arch: str, last_stride: int) -> None:
    torch.manual_seed(0)
    ref = TORCHVISION[arch](weights=None)
    if last_stride == 1:
        block = ref.layer4[0]
        (block.conv2 if arch == "resnet50" else block.conv1).stride = (1, 1)
        block.downsample[0].stride = (1, 1)
    ref.eval()
    trunk = build_backbone(arch, last_stride=last_stride).eval()
    trunk.load_state_dict(normalize_backbone_keys(ref.state_dict()))
    x = torch.randn(2, 3, 64, 32)
    want = torch.nn.Sequential(*list(ref.children())[:-2])(x)
    got = trunk(x)
    assert got.shape == want.shape == (2, trunk.out_channels, *((4, 2) if last_stride == 1
                                                                 else (2, 1)))
    assert torch.allclose(got, want, atol=1e-5)


def test_initialisation_statistics_match_torchvision() -> None:
    torch.manual_seed(0)
    ours = build_backbone("resnet50").state_dict()
    theirs = normalize_backbone_keys(tvm.resnet50(weights=None).state_dict())
    for key in ("conv1.weight", "layer3.2.conv2.weight", "layer4.0.downsample.0.weight"):
        assert abs(ours[key].std() / theirs[key].std() - 1) < 0.05, key
    assert torch.equal(ours["layer2.1.bn3.weight"], theirs["layer2.1.bn3.weight"])
    assert torch.equal(ours["layer2.1.bn3.bias"], theirs["layer2.1.bn3.bias"])


def test_bottleneck_matches_torchvision() -> None:
    ours, theirs = Bottleneck(512, 128).eval(), tvm.resnet.Bottleneck(512, 128).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 512, 8, 4)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
