"""UP-ReID (docs/METHOD.md, "Pre-training"): MoCo's global contrast plus the intrinsic patch
contrast with horizontally-symmetric hard mining (ICC, Eq. 8-10) and the augmented-vs-original
global consistency (CC, Eq. 2-4). Total: ``L = L_icc + lambda_cc * L_cc`` (Eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from upreid.losses.contrastive import (
    consistency_loss,
    multi_positive_nce,
    patch_positives,
    select_partner,
)
from upreid.models.encoder import Queues
from upreid.models.moco import MoCo
from upreid.train.distributed import gather


def partition(x: Tensor, patches: int) -> Tensor:
    """Eq. 5-6: ``(B, 3, H, W) -> (N, B, 3, H // R, W // 2)``, ``N = 2R`` patches, patch
    ``i = (r, c)`` at index ``2r + c``. Rows beyond ``R * (H // R)`` are dropped."""
    rows = patches // 2
    b, ch, h, w = x.shape
    ph, pw = h // rows, w // 2
    x = x[:, :, : rows * ph, : 2 * pw]
    x = x.reshape(b, ch, rows, ph, 2, pw).permute(2, 4, 0, 1, 3, 5)  # (R, 2, B, 3, ph, pw)
    return x.reshape(patches, b, ch, ph, pw)


class UPReID(MoCo):
    """Switches: ``cc`` (consistency), ``icc`` (patch contrast), ``hm`` (hard mining: symmetric
    positives, per-position queues), ``patches`` (N), ``positive`` (Appendix D scheme).
    With ``cc`` and ``icc`` off it is exactly MoCo."""

    def __init__(
        self,
        arch: str,
        dim: int,
        hidden_dim: int,
        queue_size: int,
        ema_momentum: float,
        tau_global: float,
        tau_patch: float,
        tau_cc: float,
        lambda_global: float,
        lambda_patch: float,
        lambda_cc: float,
        cc: bool,
        icc: bool,
        hm: bool,
        patches: int,
        positive: str,
        bn_splits: int = 1,
        seed: int = 0,
        cc_target: str = "ema",
        min_patch_height: int = 0,
    ) -> None:
        super().__init__(
            arch, dim, hidden_dim, queue_size, ema_momentum, tau_global, bn_splits, seed
        )
        self.tau_patch, self.tau_cc = tau_patch, tau_cc
        self.lambda_global, self.lambda_patch = lambda_global, lambda_patch
        self.lambda_cc = lambda_cc
        self.cc, self.icc, self.hm, self.patches, self.positive = cc, icc, hm, patches, positive
        self.cc_target, self.min_patch_height = cc_target, min_patch_height
        gen = torch.Generator().manual_seed(seed + 2)
        self.patch_queue = Queues(patches if hm else 1, queue_size, dim, gen)

    def patch_contrast(self, x_q: Tensor, x_k: Tensor) -> Tensor:
        """``(1/N) sum_i L_i`` of Eq. 10 (with HM) or Eq. 8 (without); enqueues the keys."""
        n = self.patches
        pq, pk = partition(x_q, n), partition(x_k, n)  # (N, B, 3, h, w)
        b = pq.shape[1]
        q = self.online(self._sized(pq.flatten(0, 1))).view(n, b, -1)  # (N, B, dim)
        k = self.keys(self._sized(pk.flatten(0, 1))).view(n, b, -1)  # (N, B, dim)
        queue = self.patch_queue.keys.clone().detach()
        if self.hm:
            positives = patch_positives(k, select_partner(self.positive, q, k))  # (N, B, 2, D)
            loss = multi_positive_nce(q, positives, queue, self.tau_patch)
            self.patch_queue.push(gather(k.transpose(0, 1).contiguous()).transpose(0, 1))
        else:
            loss = multi_positive_nce(q, k[:, :, None], queue.expand(n, -1, -1), self.tau_patch)
            idx = torch.randperm(n * b, generator=self.shuffle_gen)[:b]  # any positions
            self.patch_queue.push(gather(k.flatten(0, 1)[idx.to(k.device)])[None])
        return loss

    def _sized(self, patches: Tensor) -> Tensor:
        """Patches shorter than ``min_patch_height`` resized up to it (aspect kept, bilinear),
        so that the deeper stages see more than a 1x1 map."""
        h, w = patches.shape[-2:]
        if h >= self.min_patch_height:
            return patches
        size = (self.min_patch_height, max(1, round(w * self.min_patch_height / h)))
        return F.interpolate(patches, size=size, mode="bilinear", align_corners=False)

    def terms(
        self, x_o: Tensor, x_q: Tensor, x_k: Tensor
    ) -> tuple[dict[str, tuple[float, Tensor]], Tensor]:
        """Each loss term, unweighted, with its weight in the loss: ``global`` (weight
        ``lambda_global`` with ICC, 1 without), ``patch`` with ICC, ``cc`` with CC; and the
        global keys, which the caller enqueues after its backward graph is built. The patch
        queue is pushed here."""
        loss_g, q0, k0 = self.global_contrast(x_q, x_k)
        out = {"global": (self.lambda_global if self.icc else 1.0, loss_g)}
        if self.icc:
            out["patch"] = (self.lambda_patch, self.patch_contrast(x_q, x_k))
        if self.cc:
            with torch.no_grad():  # the original image, no gradient
                o = self.keys(x_o) if self.cc_target == "ema" else self._embed_online(x_o)
            out["cc"] = (self.lambda_cc, consistency_loss(q0, k0, o, self.tau_cc))
        return out, k0

    def forward(self, x_o: Tensor, x_q: Tensor, x_k: Tensor) -> dict[str, Tensor]:
        terms, k0 = self.terms(x_o, x_q, x_k)
        out = {f"loss_{name}": loss.detach() for name, (_, loss) in terms.items()}
        weighted = [weight * loss for weight, loss in terms.values()]
        out["loss"] = sum(weighted[1:], weighted[0])
        self.queue.push(gather(k0)[None])
        return out

    @torch.no_grad()
    def _embed_online(self, x: Tensor) -> Tensor:
        """The online encoder's embedding of ``x`` with its BN statistics left as they are
        (eval-mode BN would use running statistics; train mode would add x_o's to them)."""
        bns = [
            m for m in self.online.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.momentum = 0.0  # batch statistics normalise, running ones stay put
        try:
            return self.online(x)
        finally:
            for m, mom in zip(bns, saved, strict=True):
                m.momentum = mom
