"""SpCL's hybrid memory: cluster centroids and un-clustered instances in one contrastive loss.

Ge et al., "Self-paced Contrastive Learning with Hybrid Memory" (NeurIPS 2020), Eq. 1-3.
Source-domain samples are simply entries whose labels are their (offset) ground-truth identities;
the training loop sets ``labels`` after each re-clustering, the memory only holds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upreid.runtime import full_precision


@full_precision
def hybrid_loss(
    inputs: Tensor, indexes: Tensor, memory_features: Tensor, labels: Tensor, temperature: float
) -> Tensor:
    """Unified contrastive loss over cluster centroids and instances (SpCL Eq. 1-3).

    Each label's logit is the mean of ``inputs @ memory_features.T / temperature`` over the
    memory entries holding it, i.e. the similarity to the (un-normalised) centroid; a label held
    by one entry is an un-clustered instance. The loss is the cross-entropy against each sample's
    label.

    Args:
        inputs: (B, D) L2-normalised features.
        indexes: (B,) memory indices of the samples.
        memory_features: (N, D) L2-normalised memory entries (no gradient flows into them).
        labels: (N,) int64 label per memory entry, values in [0, L).
        temperature: softmax temperature (0.05 in SpCL).

    Returns:
        Scalar mean loss.
    """
    logits = inputs @ memory_features.t() / temperature  # (B, N)
    num_labels = int(labels.max()) + 1
    summed = logits.new_zeros(num_labels, logits.shape[0])  # (L, B)
    summed.index_add_(0, labels, logits.t())
    counts = torch.bincount(labels, minlength=num_labels).to(logits.dtype)  # (L,)
    centroid = (summed / counts.clamp(min=1).unsqueeze(1)).t()  # (B, L)
    centroid = centroid.masked_fill(counts == 0, float("-inf"))  # labels nobody holds
    return F.cross_entropy(centroid, labels[indexes])


class HybridMemory(nn.Module):
    """Feature memory of every training sample with its current pseudo/ground-truth label.

    ``forward`` only computes the loss; the training loop calls :meth:`update` with the same batch
    after computing the loss (SpCL does this inside the backward pass).
    """

    features: Tensor
    labels: Tensor

    def __init__(
        self,
        num_features: int,
        num_samples: int,
        temperature: float = 0.05,
        momentum: float = 0.2,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_samples = num_samples
        self.temperature = temperature
        self.momentum = momentum
        self.register_buffer("features", torch.zeros(num_samples, num_features))  # (N, D)
        self.register_buffer("labels", torch.zeros(num_samples, dtype=torch.long))  # (N,)

    def forward(self, inputs: Tensor, indexes: Tensor) -> Tensor:
        """(B, D) L2-normalised features, (B,) memory indices -> scalar hybrid loss."""
        return hybrid_loss(inputs, indexes, self.features, self.labels, self.temperature)

    @torch.no_grad()
    def update(self, inputs: Tensor, indexes: Tensor) -> None:
        """Momentum update ``f[i] = normalize(m * f[i] + (1 - m) * x)``, one sample at a time.

        Sequential like SpCL, so a repeated index is updated once per occurrence.
        """
        for x, i in zip(inputs.detach().to(self.features.dtype), indexes.tolist()):
            mixed = self.momentum * self.features[i] + (1.0 - self.momentum) * x  # (D,)
            self.features[i] = F.normalize(mixed, dim=0)
