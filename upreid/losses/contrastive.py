"""Pre-training losses of MoCo v2 and UP-ReID (docs/METHOD.md, "Pre-training"), as pure
functions.

Features are L2-normalised rows; ``B`` is the batch, ``D`` the projection dim, ``K`` the queue
length, ``N`` the number of patches per image, ``P`` the positives per patch.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from upreid.runtime import full_precision

SCHEMES = ("symmetric", "random", "online")


@full_precision
def info_nce(q: Tensor, k: Tensor, queue: Tensor, tau: float) -> Tensor:
    """Global contrast, Eq. 7: ``-log e^{q.k/t} / (e^{q.k/t} + sum_n e^{q.n/t})``.

    q, k: (B, D); queue: (K, D) negatives. Returns the mean over the batch.
    """
    pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    neg = q @ queue.t()  # (B, K)
    logits = torch.cat([pos, neg], dim=1) / tau  # (B, 1+K)
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


@full_precision
def multi_positive_nce(q: Tensor, positives: Tensor, negatives: Tensor, tau: float) -> Tensor:
    """Patch contrast with several positives, Eq. 10 (Eq. 8 when ``P = 1``).

    ``L_i = -log sum_p e^{q.p/t} / (sum_p e^{q.p/t} + sum_n e^{q.n/t})``.
    q: (N, B, D); positives: (N, B, P, D); negatives: (N, K, D), the queue of each patch position
    (a shared queue is passed expanded to (N, K, D)). Returns the mean over N and B.
    """
    pos = torch.einsum("nbd,nbpd->nbp", q, positives) / tau  # (N, B, P)
    neg = torch.einsum("nbd,nkd->nbk", q, negatives) / tau  # (N, B, K)
    everything = torch.cat([pos, neg], dim=2)
    return (torch.logsumexp(everything, dim=2) - torch.logsumexp(pos, dim=2)).mean()


def symmetric_partner(n: int, device: torch.device | None = None) -> Tensor:
    """``s(i)`` of Eq. 6: patch ``i = (r, c)`` -> ``(r, 1 - c)``, i.e. ``i xor 1``. (N,)"""
    return torch.arange(n, device=device) ^ 1


def select_partner(
    scheme: str, q: Tensor, k: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Index of the mined positive of each patch (Appendix D), (N, B).

    q, k: (N, B, D) online and key patch features. ``symmetric``: the horizontally symmetric
    patch; ``random``: a uniformly random other patch of the same image; ``online``: the least
    similar (hardest) other patch of the same image under the current model.
    """
    n, b, _ = q.shape
    if scheme == "symmetric":
        return symmetric_partner(n, q.device)[:, None].expand(n, b)
    if scheme == "random":
        offset = torch.randint(1, n, (n, b), generator=generator, device="cpu").to(q.device)
        return (torch.arange(n, device=q.device)[:, None] + offset) % n
    if scheme == "online":
        sim = torch.einsum("ibd,jbd->ibj", q.detach(), k)  # (N, B, N): q_i . k_j
        sim = sim.masked_fill(
            torch.eye(n, dtype=torch.bool, device=q.device)[:, None, :], float("inf")
        )
        return sim.argmin(dim=2)
    raise ValueError(f"unknown positive scheme {scheme!r}; valid are {list(SCHEMES)}")


def patch_positives(k: Tensor, partner: Tensor) -> Tensor:
    """``P_i = {k_i, k_partner(i)}`` stacked: k (N, B, D), partner (N, B) -> (N, B, 2, D)."""
    mined = torch.gather(k, 0, partner[:, :, None].expand_as(k))
    return torch.stack([k, mined], dim=2)


def rbf_mmd2(
    x: Tensor, y: Tensor, scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
) -> Tensor:
    """Squared MMD between samples ``x`` (M, F) and ``y`` (M', F), Eq. 4, biased estimator.

    Multi-kernel RBF (Gretton et al. 2012): ``k(a, b) = sum_s exp(-|a-b|^2 / (s * h))`` with ``h``
    the median pairwise squared distance of the pooled samples (no gradient through ``h``).
    """
    z = torch.cat([x, y], dim=0)
    d2 = torch.cdist(z, z).pow(2)  # (M+M', M+M')
    h = d2.detach()[~torch.eye(len(z), dtype=torch.bool, device=z.device)].median().clamp_min(1e-8)
    kernel = cast(Tensor, sum(torch.exp(-d2 / (s * h)) for s in scales))  # scales is not empty
    m = len(x)
    return kernel[:m, :m].mean() + kernel[m:, m:].mean() - 2 * kernel[:m, m:].mean()


@full_precision
def consistency_loss(q0: Tensor, k0: Tensor, o: Tensor, tau: float) -> Tensor:
    """Global consistency, Eq. 2-4: ``MMD^2(P^a, P^o)``.

    ``P^a_i = softmax_j(q0_i . k0_j / tau)``, ``P^o_i = softmax_j(o_i . o_j / tau)``: rows of the
    two (B, B) matrices are the samples. q0, k0, o: (B, D); the original-image target ``o``
    takes no gradient.
    """
    p_aug = F.softmax(q0 @ k0.t() / tau, dim=1)
    with torch.no_grad():
        p_orig = F.softmax(o @ o.t() / tau, dim=1)
    return rbf_mmd2(p_aug, p_orig)
