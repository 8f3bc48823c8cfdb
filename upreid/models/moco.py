"""MoCo v2 (He et al. 2020; Chen et al. 2020): the baseline pre-training, Eq. 7 only."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from upreid.losses.contrastive import info_nce
from upreid.models.encoder import Encoder, Queues, ema_update
from upreid.train.distributed import batch_shuffle, batch_unshuffle, gather


class MoCo(nn.Module):
    """Online encoder ``f_theta``, EMA encoder ``f_xi`` and the image-level queue ``Q0``.

    ``forward(x_o, x_q, x_k)`` returns a dict of scalar losses with ``loss`` the total; the
    original ``x_o`` is unused here (UP-ReID uses it).
    """

    def __init__(
        self,
        arch: str,
        dim: int,
        hidden_dim: int,
        queue_size: int,
        ema_momentum: float,
        tau_global: float,
        bn_splits: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.online = Encoder(arch, hidden_dim, dim)
        self.ema = copy.deepcopy(self.online)
        self.ema.requires_grad_(False)
        gen = torch.Generator().manual_seed(seed)
        self.queue = Queues(1, queue_size, dim, gen)
        self.momentum, self.tau_global, self.bn_splits = ema_momentum, tau_global, bn_splits
        self.shuffle_gen = torch.Generator().manual_seed(seed + 1)  # same on every rank

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """EMA features of ``x`` (B, 3, h, w) -> (B, dim), with shuffle-BN: the batch is permuted
        across ranks and cut into ``bn_splits`` groups, so batch statistics cannot leak the
        positive pair."""
        shuffled, inverse = batch_shuffle(x, self.shuffle_gen)
        feats = torch.cat([self.ema(part) for part in shuffled.chunk(self.bn_splits)])
        return batch_unshuffle(feats, inverse)

    @torch.no_grad()
    def step_ema(self) -> None:
        """Called by the training loop after every optimizer step."""
        ema_update(self.online, self.ema, self.momentum)

    def global_contrast(self, x_q: Tensor, x_k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(L_g, q0, k0)``; enqueues nothing (see :meth:`enqueue`)."""
        q0 = self.online(x_q)  # (B, dim)
        k0 = self.keys(x_k)  # (B, dim)
        return info_nce(q0, k0, self.queue.keys[0].clone().detach(), self.tau_global), q0, k0

    def forward(self, x_o: Tensor, x_q: Tensor, x_k: Tensor) -> dict[str, Tensor]:
        loss, _, k0 = self.global_contrast(x_q, x_k)
        self.queue.push(gather(k0)[None])
        return {"loss": loss, "loss_global": loss.detach()}
