"""Pieces shared by MoCo and UP-ReID: the projection encoder, the EMA update, ring-buffer queues."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upreid.models.backbone import FEATURE_DIMS, build_backbone
from upreid.runtime import full_precision


class Encoder(nn.Module):
    """Backbone + global average pooling + projection MLP + L2 normalisation.

    ``(B, 3, H, W) -> (B, dim)``; any input size works (the pooling is global), so patches go
    through at their own size.
    """

    def __init__(self, arch: str, hidden_dim: int, dim: int) -> None:
        super().__init__()
        self.backbone = build_backbone(arch)
        width = FEATURE_DIMS[arch]
        self.projector = nn.Sequential(
            nn.Linear(width, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.backbone(x).mean(dim=(2, 3))  # (B, C)
        return _project(self.projector, pooled)


@full_precision
def _project(projector: nn.Module, pooled: Tensor) -> Tensor:
    """The projection and its L2 normalisation in float32 under any autocast: (B, C) -> (B, dim)."""
    return F.normalize(projector(pooled), dim=1)


@torch.no_grad()
def ema_update(online: nn.Module, ema: nn.Module, momentum: float) -> None:
    """``xi <- m * xi + (1 - m) * theta`` for every parameter; buffers (BN stats) are copied."""
    for p_o, p_e in zip(online.parameters(), ema.parameters(), strict=True):
        p_e.mul_(momentum).add_(p_o.detach(), alpha=1 - momentum)
    for b_o, b_e in zip(online.buffers(), ema.buffers(), strict=True):
        b_e.copy_(b_o)


class Queues(nn.Module):
    """``count`` FIFO ring buffers of ``size`` L2-normalised ``dim``-d keys, as module buffers
    (they travel with checkpoints and devices)."""

    keys: Tensor  # buffers, registered in __init__
    ptr: Tensor

    def __init__(
        self, count: int, size: int, dim: int, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        init = F.normalize(torch.randn(count, size, dim, generator=generator), dim=2)
        self.register_buffer("keys", init)  # (count, size, dim)
        self.register_buffer("ptr", torch.zeros(count, dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Enqueue ``keys`` (count, B, dim), overwriting the oldest entries."""
        count, batch, _ = keys.shape
        size = self.keys.shape[1]
        for i in range(count):
            idx = (self.ptr[i] + torch.arange(batch, device=keys.device)) % size
            self.keys[i, idx] = keys[i].to(self.keys.dtype)
            self.ptr[i] = (self.ptr[i] + batch) % size
