"""BoT, the "bag of tricks" baseline (Luo et al. 2019): last stride 1, GAP, BNNeck."""

from __future__ import annotations

from torch import Tensor, nn

from upreid.models.backbone import FEATURE_DIMS, build_backbone
from upreid.models.heads import BNNeck, ReIDOutput


class BoT(nn.Module):
    """ResNet (last stride 1) + GAP + BNNeck.

    Triplet loss on the GAP feature ``(B, D)``, CE on the BNNeck logits; the test feature is the
    BN feature ``(B, D)`` with ``D = FEATURE_DIMS[arch]``.
    """

    def __init__(self, arch: str, num_classes: int) -> None:
        super().__init__()
        self.backbone = build_backbone(arch, last_stride=1)
        self.embedding_dim = FEATURE_DIMS[arch]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.neck = BNNeck(self.embedding_dim, num_classes)

    def init_branches(self) -> None:
        """No-op: BoT has no branch copies of the trunk."""

    def forward(self, x: Tensor) -> ReIDOutput:
        feat = self.pool(self.backbone(x)).flatten(1)  # (B, D)
        bn_feat, logits = self.neck(feat)  # (B, D), (B, num_classes)
        return ReIDOutput(logits=[logits], triplet=[feat], embedding=bn_feat)
