"""Shapes, branch wiring and a short training run for the fine-tuning models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from upreid.losses.reid import reid_loss
from upreid.models.backbone import ResNetTrunk
from upreid.models.bdb import BDB, BatchDrop
from upreid.models.heads import BNNeck, ReIDOutput
from upreid.models.mgn import MGN
from upreid.models.reid import METHODS, build_reid_model

NUM_CLASSES = 5
EMBED_DIMS = {"bot": 512, "mgn": 8 * 256, "bdb": 512 + 1024, "pcb": 6 * 256}
NUM_LOGITS = {"bot": 1, "mgn": 8, "bdb": 2, "pcb": 6}
NUM_TRIPLET = {"bot": 1, "mgn": 3, "bdb": 2, "pcb": 0}


@pytest.fixture(scope="module", params=sorted(METHODS))
def method_model(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    return request.param, build_reid_model(request.param, "resnet18", NUM_CLASSES)


@pytest.mark.parametrize("train", [True, False])
def test_output_shapes(method_model: tuple[str, nn.Module], train: bool) -> None:
    method, model = method_model
    model.train(train)
    with torch.no_grad():
        out = model(torch.randn(4, 3, 128, 64))
    assert isinstance(out, ReIDOutput)
    assert isinstance(model.backbone, ResNetTrunk)
    assert out.embedding.shape == (4, EMBED_DIMS[method])
    assert len(out.logits) == NUM_LOGITS[method]
    assert all(z.shape == (4, NUM_CLASSES) for z in out.logits)
    assert len(out.triplet) == NUM_TRIPLET[method]
    assert all(f.dim() == 2 and f.shape[0] == 4 for f in out.triplet)
    assert torch.isfinite(out.embedding).all()


def test_every_trainable_parameter_gets_a_gradient(method_model: tuple[str, nn.Module]) -> None:
    _, model = method_model
    model.train().zero_grad()
    targets = torch.tensor([0, 0, 1, 1])
    loss, _ = reid_loss(model(torch.randn(4, 3, 128, 64)), targets, 0.1, 0.0)
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused  # DDP without find_unused_parameters needs this


def test_unknown_method_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="bdb.*bot.*mgn.*pcb"):
        build_reid_model("osnet", "resnet18", NUM_CLASSES)


def test_mgn_has_eight_reductions_and_classifiers() -> None:
    model = MGN("resnet18", NUM_CLASSES)
    assert isinstance(model.reductions, nn.ModuleList) and len(model.reductions) == 8
    assert isinstance(model.classifiers, nn.ModuleList) and len(model.classifiers) == 8
    assert len(model.branches) == 3
    strides = [branch[0].conv1.stride for branch in model.branches]  # resnet18 basic blocks
    assert strides == [(2, 2), (1, 1), (1, 1)]


def test_mgn_init_branches_copies_loaded_layer4() -> None:
    model = MGN("resnet18", NUM_CLASSES)
    first_params = [id(p) for p in model.branches.parameters()]
    other = ResNetTrunk("resnet18")
    model.backbone.load_state_dict(other.state_dict())
    branch_w = model.branches[1][0].conv1.weight
    assert not torch.equal(branch_w, other.layer4[0].conv1.weight)
    model.init_branches()
    for branch in model.branches:
        for key, value in other.layer4.state_dict().items():
            assert torch.equal(branch.state_dict()[key], value), key
    assert [id(p) for p in model.branches.parameters()] == first_params
    assert all(p.requires_grad for p in model.branches.parameters())
    assert not any(p.requires_grad for p in model.backbone.layer4.parameters())


def test_batch_drop_zeroes_same_stripe_for_whole_batch() -> None:
    drop = BatchDrop(h_ratio=0.33, w_ratio=1.0).train()
    x = torch.rand(6, 3, 24, 8) + 0.5  # strictly positive
    for _ in range(5):
        zero = drop(x) == 0  # (B, C, H, W)
        assert (zero == zero[:1, :1]).all()  # same block for every image and channel
        rows = zero[0, 0].all(dim=1)
        assert rows.sum() == round(0.33 * 24)
        assert zero[0, 0].sum() == rows.sum() * 8  # full-width rows only
        idx = rows.nonzero().flatten()
        assert (idx.diff() == 1).all()  # one contiguous stripe
    assert torch.equal(drop.eval()(x), x)


def test_batch_drop_width_ratio() -> None:
    drop = BatchDrop(h_ratio=0.5, w_ratio=0.5).train()
    zero = drop(torch.ones(2, 1, 8, 8)) == 0
    assert zero.sum() == 2 * 4 * 4


def test_bdb_ratios_are_arguments() -> None:
    model = BDB("resnet18", NUM_CLASSES, h_ratio=0.5, w_ratio=0.8)
    assert (model.drop.h_ratio, model.drop.w_ratio) == (0.5, 0.8)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_bdb_part_block_is_a_torchvision_bottleneck_keeping_the_map(arch: str) -> None:
    model = BDB(arch, NUM_CLASSES).eval()
    assert isinstance(model.part_block, Bottleneck) and model.part_block.downsample is None
    fmap = torch.randn(2, model.backbone.out_channels, 8, 4)
    with torch.no_grad():
        assert model.part_block(fmap).shape == fmap.shape


def test_bnneck_bias_frozen() -> None:
    neck = BNNeck(8, 3)
    assert not neck.bn.bias.requires_grad
    assert neck.classifier.bias is None
    feat, logits = neck(torch.randn(4, 8))
    assert feat.shape == (4, 8) and logits.shape == (4, 3)


def test_bot_training_reduces_loss() -> None:
    torch.manual_seed(0)
    targets = torch.arange(4).repeat_interleave(4)  # 4 classes x 4 images
    shift = torch.randn(4, 3, 1, 1)[targets]
    images = torch.randn(16, 3, 64, 32) * 0.5 + shift
    model = build_reid_model("bot", "resnet18", 4).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(15):
        loss, _ = reid_loss(model(images), targets, label_smoothing=0.1, margin=0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
