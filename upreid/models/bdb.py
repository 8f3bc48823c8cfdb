"""BDB, batch DropBlock network (Dai et al. 2019): global branch + dropped part branch."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from upreid.models.backbone import FEATURE_DIMS, build_backbone
from upreid.models.heads import Reduction, ReIDOutput, make_classifier, weights_init_kaiming


class BatchDrop(nn.Module):
    """Batch DropBlock: in training, zero ONE random block, the same for the whole batch.

    The block covers ``round(h_ratio * H)`` rows and ``round(w_ratio * W)`` columns of a
    ``(B, C, H, W)`` map (a full-width horizontal stripe by default); identity in eval mode.
    """

    def __init__(self, h_ratio: float = 0.33, w_ratio: float = 1.0) -> None:
        super().__init__()
        self.h_ratio, self.w_ratio = h_ratio, w_ratio

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        h, w = x.shape[-2:]
        rh, rw = round(self.h_ratio * h), round(self.w_ratio * w)
        top = int(torch.randint(0, h - rh + 1, (1,)))
        left = int(torch.randint(0, w - rw + 1, (1,)))
        mask = x.new_ones(h, w)
        mask[top : top + rh, left : left + rw] = 0
        return x * mask  # (H, W) mask broadcast over batch and channels


class BDB(nn.Module):
    """ResNet (last stride 1) shared by two branches on the layer4 map ``(B, C, H, W)``.

    Global: GAP -> Reduction to ``global_dim`` -> classifier. Part: extra bottleneck ->
    :class:`BatchDrop` -> global max pooling -> Reduction to ``part_dim`` -> classifier.
    CE and triplet on both reduced features; the test feature is their concatenation
    ``(B, global_dim + part_dim)``.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        h_ratio: float = 0.33,
        w_ratio: float = 1.0,
        global_dim: int = 512,
        part_dim: int = 1024,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(arch, last_stride=1)
        in_dim = FEATURE_DIMS[arch]
        # C -> C/4 -> C: channels and stride unchanged, so the identity shortcut needs no
        # downsample module
        self.part_block = Bottleneck(in_dim, in_dim // Bottleneck.expansion)
        self.part_block.apply(weights_init_kaiming)
        self.drop = BatchDrop(h_ratio, w_ratio)
        self.reductions = nn.ModuleList(
            [Reduction(in_dim, global_dim), Reduction(in_dim, part_dim)]
        )
        self.classifiers = nn.ModuleList(
            [make_classifier(global_dim, num_classes), make_classifier(part_dim, num_classes)]
        )
        self.embedding_dim = global_dim + part_dim

    def init_branches(self) -> None:
        """No-op: the part branch shares layer4 with the global branch."""

    def forward(self, x: Tensor) -> ReIDOutput:
        fmap = self.backbone(x)  # (B, C, H, W)
        pooled = [
            fmap.mean(dim=(2, 3)),  # (B, C) global average
            self.drop(self.part_block(fmap)).amax(dim=(2, 3)),
        ]  # (B, C) part max
        feats = [red(v) for red, v in zip(self.reductions, pooled)]  # (B, 512), (B, 1024)
        logits = [fc(f) for fc, f in zip(self.classifiers, feats)]
        return ReIDOutput(logits=logits, triplet=feats, embedding=torch.cat(feats, dim=1))
