"""Tests for upreid.models.memory: SpCL's hybrid memory and loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from upreid.models.memory import HybridMemory, hybrid_loss


def _naive_hybrid_loss(
    inputs: torch.Tensor, indexes: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, t: float
) -> float:
    """Loop reference: mean member similarity per label, softmax over held labels, NLL."""
    total = 0.0
    held = sorted(set(labels.tolist()))
    for x, idx in zip(inputs.double(), indexes.tolist()):
        scores = {}
        for c in held:
            members = [j for j in range(len(labels)) if labels[j] == c]
            scores[c] = sum(float(x @ feats[j].double()) for j in members) / len(members) / t
        norm = sum(math.exp(s) for s in scores.values())
        total -= math.log(math.exp(scores[int(labels[idx])]) / norm)
    return total / len(inputs)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0])
def test_hybrid_loss_matches_naive(temperature: float) -> None:
    torch.manual_seed(0)
    feats = F.normalize(torch.randn(12, 6), dim=1)
    labels = torch.tensor([0, 0, 0, 2, 2, 3, 4, 5, 5, 5, 5, 7])  # gaps 1, 6; singletons
    inputs = F.normalize(torch.randn(5, 6), dim=1)
    indexes = torch.tensor([0, 5, 11, 8, 5])
    loss = hybrid_loss(inputs, indexes, feats, labels, temperature)
    expected = _naive_hybrid_loss(inputs, indexes, feats, labels, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_update_rule_on_hand_numbers() -> None:
    memory = HybridMemory(2, 3, momentum=0.2)
    memory.features.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    memory.update(torch.tensor([[0.0, 1.0]]), torch.tensor([0]))
    norm = math.sqrt(0.2**2 + 0.8**2)
    expected = torch.tensor([[0.2 / norm, 0.8 / norm], [0.0, 1.0], [0.6, 0.8]])
    torch.testing.assert_close(memory.features, expected)
    # a repeated index is updated once per occurrence, in order
    memory.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, 1]))
    first = F.normalize(torch.tensor([0.8, 0.2]), dim=0)
    second = F.normalize(0.2 * first + torch.tensor([0.8, 0.0]), dim=0)
    torch.testing.assert_close(memory.features[1], second)


def test_forward_does_not_modify_memory_and_grads_reach_inputs() -> None:
    torch.manual_seed(0)
    memory = HybridMemory(8, 10)
    memory.features.copy_(F.normalize(torch.randn(10, 8), dim=1))
    memory.labels.copy_(torch.tensor([0, 0, 1, 1, 1, 2, 3, 4, 4, 5]))
    before = memory.features.clone(), memory.labels.clone()
    raw = torch.randn(4, 8, requires_grad=True)
    loss = memory(F.normalize(raw, dim=1), torch.tensor([0, 2, 6, 9]))
    loss.backward()
    assert loss.dim() == 0 and raw.grad is not None and raw.grad.abs().sum() > 0
    torch.testing.assert_close(memory.features, before[0])
    assert torch.equal(memory.labels, before[1])
    assert not memory.features.requires_grad


def test_loss_decreases_when_training_features() -> None:
    torch.manual_seed(0)
    memory = HybridMemory(16, 20, temperature=0.1)
    memory.features.copy_(F.normalize(torch.randn(20, 16), dim=1))
    memory.labels.copy_(torch.arange(20) // 4)
    raw = torch.randn(20, 16, requires_grad=True)
    opt = torch.optim.SGD([raw], lr=1.0)
    indexes = torch.arange(20)
    losses = []
    for _ in range(20):
        inputs = F.normalize(raw, dim=1)
        loss = memory(inputs, indexes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        memory.update(inputs, indexes)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
