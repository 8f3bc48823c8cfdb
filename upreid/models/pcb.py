"""PCB, part-based convolutional baseline (Sun et al. 2018): 6 horizontal stripes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from upreid.models.backbone import FEATURE_DIMS, build_backbone
from upreid.models.heads import Reduction, ReIDOutput, make_classifier


class PCB(nn.Module):
    """ResNet (last stride 1), ``num_parts`` stripes average-pooled, each reduced and classified.

    CE on each stripe, no triplet; the test feature is the concatenation
    ``(B, num_parts * reduced_dim)`` (1536 by default).
    """

    def __init__(
        self, arch: str, num_classes: int, num_parts: int = 6, reduced_dim: int = 256
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(arch, last_stride=1)
        self.num_parts = num_parts
        self.embedding_dim = num_parts * reduced_dim
        self.pool = nn.AdaptiveAvgPool2d((num_parts, 1))
        in_dim = FEATURE_DIMS[arch]
        self.reductions = nn.ModuleList(Reduction(in_dim, reduced_dim) for _ in range(num_parts))
        self.classifiers = nn.ModuleList(
            make_classifier(reduced_dim, num_classes) for _ in range(num_parts)
        )

    def init_branches(self) -> None:
        """No-op: PCB has no branch copies of the trunk."""

    def forward(self, x: Tensor) -> ReIDOutput:
        stripes = self.pool(self.backbone(x)).flatten(2)  # (B, C, num_parts)
        feats = [red(stripes[:, :, i]) for i, red in enumerate(self.reductions)]  # each (B, r)
        logits = [fc(f) for fc, f in zip(self.classifiers, feats)]
        return ReIDOutput(logits=logits, triplet=[], embedding=torch.cat(feats, dim=1))
