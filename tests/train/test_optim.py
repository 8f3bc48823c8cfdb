"""Our SGD, Adam and schedule against torch.optim's (the reference), step by step."""

import pytest
import torch

from upreid.train import optim


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=g))
            for shape in ((5, 3), (7,), (2, 3, 4))]


def _run(opt, sched, params, steps: int = 12) -> list[torch.Tensor]:
    """A fixed loss; one parameter gets no gradient on odd steps (skipped by both)."""
    g = torch.Generator().manual_seed(99)
    targets = [torch.randn(p.shape, generator=g) for p in params]
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        used = params if step % 2 == 0 else params[:2]
        loss = sum(((p - t) ** 2 * (1 + i)).sum() for i, (p, t) in enumerate(zip(used, targets)))
        loss.backward()
        opt.step()
        sched.step()
    return [p.detach().clone() for p in params]


def _factor(step: int) -> float:
    return 0.1 if step < 3 else (1.0 if step < 8 else 0.1)


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.0), (0.9, 1e-2)])
def test_sgd_follows_torch(momentum: float, wd: float) -> None:
    ours, ref = _params(0), _params(0)
    o = optim.SGD(ours, lr=0.05, momentum=momentum, weight_decay=wd)
    r = torch.optim.SGD(ref, lr=0.05, momentum=momentum, weight_decay=wd)
    got = _run(o, optim.LambdaSchedule(o, _factor), ours)
    want = _run(r, torch.optim.lr_scheduler.LambdaLR(r, _factor), ref)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    assert o.param_groups[0]["lr"] == pytest.approx(r.param_groups[0]["lr"])


@pytest.mark.parametrize("wd", [0.0, 5e-4])
def test_adam_follows_torch(wd: float) -> None:
    ours, ref = _params(1), _params(1)
    o = optim.Adam(ours, lr=1e-2, weight_decay=wd)
    r = torch.optim.Adam(ref, lr=1e-2, weight_decay=wd)
    got = _run(o, optim.LambdaSchedule(o, _factor), ours)
    want = _run(r, torch.optim.lr_scheduler.LambdaLR(r, _factor), ref)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    assert not torch.allclose(got[0], _params(1)[0])  # it moved


def test_state_dict_round_trip_continues_identically() -> None:
    a, b = _params(2), _params(2)
    oa = optim.Adam(a, lr=1e-2)
    sa = optim.LambdaSchedule(oa, _factor)
    _run(oa, sa, a, steps=5)
    blob, sched_blob = oa.state_dict(), sa.state_dict()
    for src, dst in zip(a, b):
        dst.data.copy_(src.data)
    ob = optim.Adam(b, lr=1e-2)
    sb = optim.LambdaSchedule(ob, _factor)
    ob.load_state_dict(blob)
    sb.load_state_dict(sched_blob)
    assert ob.param_groups[0]["lr"] == oa.param_groups[0]["lr"]
    for x, y in zip(_run(oa, sa, a, steps=4), _run(ob, sb, b, steps=4)):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="optimizer state for 3 parameters, model has 1"):
        optim.Adam(b[:1], lr=1e-2).load_state_dict(blob)
