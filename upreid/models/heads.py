"""Pieces shared by the fine-tuning models: output type, BNNeck, reduction, initialisers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class ReIDOutput:
    """What every re-ID model's ``forward`` returns.

    Attributes:
        logits: identity scores for the CE loss, each ``(B, num_classes)``.
        triplet: features for the triplet loss, each ``(B, D)``; empty when unused (PCB).
        embedding: ``(B, E)`` test feature compared at evaluation.
    """

    logits: list[Tensor]
    triplet: list[Tensor]
    embedding: Tensor


def weights_init_kaiming(m: nn.Module) -> None:
    """Kaiming init for linear/conv layers, identity for batch norms (use with ``.apply``)."""
    if isinstance(m, nn.Linear):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
        nn.init.ones_(m.weight)
    else:
        return
    bias = getattr(m, "bias", None)
    if bias is not None:
        nn.init.zeros_(bias)


def weights_init_classifier(m: nn.Module) -> None:
    """Small normal init (std 0.001) for identity classifiers (use with ``.apply``)."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.001)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class BNNeck(nn.Module):
    """BoT's BNNeck: ``(B, D) -> ((B, D) bn feature, (B, num_classes) logits)``.

    The batch norm's shift is frozen at 0 and the classifier has no bias (Luo et al. 2019).
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_dim, num_classes, bias=False)
        self.bn.apply(weights_init_kaiming)
        self.classifier.apply(weights_init_classifier)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.bn(x)
        return feat, self.classifier(feat)


class Reduction(nn.Module):
    """1x1 projection + BN + ReLU on pooled vectors: ``(B, in_dim) -> (B, out_dim)``.

    Equivalent to MGN/PCB/BDB's ``Conv2d(1x1) -> BN -> ReLU`` applied to a ``(B, C, 1, 1)`` map.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)
        )
        self.net.apply(weights_init_kaiming)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def make_classifier(in_dim: int, num_classes: int) -> nn.Linear:
    """Identity classifier ``(B, in_dim) -> (B, num_classes)`` with the small-normal init."""
    fc = nn.Linear(in_dim, num_classes)
    fc.apply(weights_init_classifier)
    return fc
