"""MoCo and UP-ReID modules: partition, switches, gradients, queues, EMA."""

from __future__ import annotations

import pytest
import torch

from upreid.models.encoder import Encoder, Queues, ema_update
from upreid.models.moco import MoCo
from upreid.models.upreid import UPReID, partition

H, W = 64, 32


def _model(**switches: object) -> UPReID:
    kw = dict(cc=True, icc=True, hm=True, patches=4, positive="symmetric", lambda_global=1.0)
    kw |= dict(lambda_patch=1.0, lambda_cc=1.0)
    kw.update(switches)
    torch.manual_seed(0)
    return UPReID(
        "resnet18",
        dim=16,
        hidden_dim=32,
        queue_size=24,
        ema_momentum=0.9,
        tau_global=0.1,
        tau_patch=0.1,
        tau_cc=0.1,
        bn_splits=2,
        **kw,
    )  # type: ignore[arg-type]


def _views(b: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, 3, H, W, generator=g) for _ in range(3)]


def test_partition_layout() -> None:
    x = torch.arange(2 * 3 * 8 * 4, dtype=torch.float32).view(2, 3, 8, 4)
    p = partition(x, 4)  # 2 rows x 2 halves of 4x2
    assert p.shape == (4, 2, 3, 4, 2)
    assert torch.equal(p[0], x[:, :, :4, :2]) and torch.equal(p[1], x[:, :, :4, 2:])
    assert torch.equal(p[2], x[:, :, 4:, :2]) and torch.equal(p[3], x[:, :, 4:, 2:])
    assert partition(torch.zeros(1, 3, 13, 4), 6).shape == (6, 1, 3, 4, 2)


@pytest.mark.parametrize(
    "switches, expected",
    [
        ({}, {"loss_global", "loss_patch", "loss_cc"}),
        ({"cc": False}, {"loss_global", "loss_patch"}),
        ({"icc": False}, {"loss_global", "loss_cc"}),
        ({"cc": False, "icc": False}, {"loss_global"}),
        ({"hm": False}, {"loss_global", "loss_patch", "loss_cc"}),
    ],
)
def test_switches_choose_the_losses(switches: dict, expected: set[str]) -> None:
    out = _model(**switches)(*_views())
    assert set(out) - {"loss"} == expected
    parts = sum(out[k] for k in expected)
    if "loss_patch" in expected or "loss_cc" in expected:
        assert out["loss"].item() == pytest.approx(parts.item(), rel=1e-5)


@pytest.mark.parametrize("icc", [True, False])
def test_the_lambdas_weight_the_loss_as_eq_1_and_9(icc: bool) -> None:
    # L = lambda_g L_g + lambda_p L_icc + lambda_cc L_cc; without ICC, L_g stands unweighted
    out = _model(icc=icc, lambda_global=0.5, lambda_patch=2.0, lambda_cc=3.0)(*_views())
    g, cc = out["loss_global"].item(), out["loss_cc"].item()
    expected = 0.5 * g + 2.0 * out["loss_patch"].item() + 3.0 * cc if icc else g + 3.0 * cc
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["loss"].item() != pytest.approx(g + cc + float(out.get("loss_patch", 0.0)), rel=1e-3)


def test_the_loss_is_the_weighted_sum_of_the_terms_to_the_last_bit() -> None:
    # what grad_share.py measures (the terms) is exactly what training descends (the loss)
    kw = dict(lambda_global=0.7, lambda_patch=0.3, lambda_cc=2.0)
    a, b = _model(**kw), _model(**kw)
    loss = a(*_views())["loss"]
    terms, _ = b.terms(*_views())
    weighted = [w * t for w, t in terms.values()]
    assert set(terms) == {"global", "patch", "cc"}
    assert torch.equal(loss, sum(weighted[1:], weighted[0]))
    loss.backward()
    sum(weighted[1:], weighted[0]).backward()
    for pa, pb in zip(a.online.parameters(), b.online.parameters(), strict=True):
        assert (pa.grad is None) == (pb.grad is None)
        assert pa.grad is None or torch.equal(pa.grad, pb.grad)


def test_hard_mining_uses_one_queue_per_position() -> None:
    assert _model().patch_queue.keys.shape[0] == 4
    assert _model(hm=False).patch_queue.keys.shape[0] == 1
    assert _model(patches=8).patch_queue.keys.shape[0] == 8


def test_no_gradient_from_the_original_image() -> None:
    model = _model()
    x_o, x_q, x_k = _views()
    x_o.requires_grad_(True)
    x_k.requires_grad_(True)
    x_q.requires_grad_(True)
    model(x_o, x_q, x_k)["loss"].backward()
    assert x_o.grad is None and x_k.grad is None and x_q.grad is not None
    assert all(p.grad is None for p in model.ema.parameters())
    assert any(p.grad is not None for p in model.online.parameters())


def test_original_branch_changes_only_the_consistency_target() -> None:
    model = _model()
    x_o, x_q, x_k = _views()
    torch.manual_seed(3)
    a = model(x_o, x_q, x_k)
    model2 = _model()
    torch.manual_seed(3)
    b = model2(torch.zeros_like(x_o), x_q, x_k)
    assert a["loss_global"].item() == pytest.approx(b["loss_global"].item(), rel=1e-6)
    assert a["loss_cc"].item() != pytest.approx(b["loss_cc"].item(), rel=1e-3)


def test_queue_is_a_fifo_ring_buffer() -> None:
    q = Queues(2, 5, 3)
    keys = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    q.push(keys)
    q.push(keys + 100)
    assert q.ptr.tolist() == [3, 3]
    assert torch.equal(q.keys[0, 0], keys[0, 1] + 100)  # wrapped around
    assert torch.equal(q.keys[1, 4], keys[1, 0] + 100)
    assert "keys" in dict(q.named_buffers())


def test_forward_enqueues_keys_and_ema_moves_towards_online() -> None:
    model = _model()
    before = model.queue.ptr.clone()
    model(*_views())
    assert model.queue.ptr.item() == (before.item() + 4) % 24
    online, ema = Encoder("resnet18", 8, 4), Encoder("resnet18", 8, 4)
    p_o, p_e = next(online.parameters()), next(ema.parameters())
    expected = 0.9 * p_e.detach() + 0.1 * p_o.detach()
    ema_update(online, ema, 0.9)
    assert torch.allclose(p_e, expected)


def test_moco_is_the_baseline() -> None:
    torch.manual_seed(0)
    moco = MoCo("resnet18", 16, 32, 24, 0.9, 0.1, bn_splits=2)
    out = moco(*_views())
    assert set(out) == {"loss", "loss_global"}
    assert torch.isfinite(out["loss"])


def test_online_cc_target_takes_no_gradient_and_keeps_bn_statistics() -> None:
    model = _model(cc_target="online", icc=False)
    x_o, x_q, x_k = _views()
    x_o.requires_grad_(True)
    bn = model.online.backbone.bn1
    model(x_o, x_q, x_k)["loss"].backward()
    assert x_o.grad is None
    # x_o adds nothing to the running statistics: the same as a model that never saw it
    other = _model(cc_target="online", icc=False, cc=False)
    other(x_o.detach(), x_q, x_k)
    assert torch.allclose(bn.running_mean, other.online.backbone.bn1.running_mean)
    assert bn.momentum == pytest.approx(0.1)
    # and the target differs from the EMA encoder's once the two encoders differ
    ema = _model(cc_target="ema", icc=False)
    torch.manual_seed(5)
    for p in ema.online.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    online = _model(cc_target="online", icc=False)
    online.load_state_dict(ema.state_dict())
    torch.manual_seed(3)
    a = ema(x_o.detach(), x_q, x_k)["loss_cc"]
    torch.manual_seed(3)
    b = online(x_o.detach(), x_q, x_k)["loss_cc"]
    assert a.item() != pytest.approx(b.item(), rel=1e-4)


def test_small_patches_are_resized_up() -> None:
    seen: list[tuple[int, int]] = []
    model = _model(min_patch_height=32, cc=False)
    model.online.backbone.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-2:]))
    model(*_views())
    # the global view at 64x32, then the 4 patches of 32x16 (2 rows): already tall enough
    assert seen == [(H, W), (H // 2, W // 2)]
    seen.clear()
    model = _model(min_patch_height=48, cc=False)
    model.online.backbone.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-2:]))
    model(*_views())
    assert seen == [(H, W), (48, 24)]
