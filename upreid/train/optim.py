"""SGD with momentum, Adam and a per-step learning-rate factor: ``torch.optim``'s update rules.

Written here because constructing any ``torch.optim`` optimizer imports ``torch._dynamo`` (about
1.1 s on 2 cores), paid once by each of the pipeline's stage processes. The arithmetic follows
``torch.optim.SGD`` / ``torch.optim.Adam`` (single-tensor path, L2 weight decay added to the
gradient); tests/train/test_optim.py checks the trajectories against them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class _Optimizer:
    """One parameter group; per-parameter state in ``state`` (a list aligned with params)."""

    def __init__(self, params: Iterable[Tensor], **group: Any) -> None:
        self.param_groups = [{"params": list(params), **group, "initial_lr": group["lr"]}]
        self.state: list[dict[str, Tensor]] = [{} for _ in self.param_groups[0]["params"]]

    @property
    def params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"group": group, "state": [dict(s) for s in self.state]}

    def load_state_dict(self, blob: dict[str, Any]) -> None:
        if len(blob["state"]) != len(self.params):
            raise ValueError(f"optimizer state for {len(blob['state'])} parameters, "
                             f"model has {len(self.params)}")
        self.param_groups[0].update(blob["group"])
        self.state = [{k: v.to(p.device, copy=True) for k, v in s.items()}
                      for s, p in zip(blob["state"], self.params, strict=True)]


class SGD(_Optimizer):
    """``p -= lr * b`` with ``b = momentum * b + (g + weight_decay * p)`` (first step: b = g')."""

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            grad = p.grad.add(p, alpha=g["weight_decay"]) if g["weight_decay"] else p.grad
            if g["momentum"]:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.detach().clone()
                else:
                    buf.mul_(g["momentum"]).add_(grad)
                grad = buf
            p.add_(grad, alpha=-g["lr"])


class Adam(_Optimizer):
    """Kingma & Ba with bias correction; weight decay as L2 on the gradient (torch's Adam)."""

    def __init__(self, params: Iterable[Tensor], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        beta1, beta2 = g["betas"]
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            grad = p.grad.add(p, alpha=g["weight_decay"]) if g["weight_decay"] else p.grad
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            step = float(state["step"])
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (state["exp_avg_sq"].sqrt() / (1 - beta2 ** step) ** 0.5).add_(g["eps"])
            p.addcdiv_(state["exp_avg"], denom, value=-g["lr"] / (1 - beta1 ** step))


class LambdaSchedule:
    """``lr = initial_lr * factor(count)``, ``count`` advanced by :meth:`step` (per epoch or per
    iteration, as the loop calls it); starts at ``factor(0)``."""

    def __init__(self, optimizer: _Optimizer, factor: Callable[[int], float]) -> None:
        self.optimizer, self.factor, self.count = optimizer, factor, 0
        self._apply()

    def _apply(self) -> None:
        group = self.optimizer.param_groups[0]
        group["lr"] = group["initial_lr"] * self.factor(self.count)

    def step(self) -> None:
        self.count += 1
        self._apply()

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count}

    def load_state_dict(self, blob: dict[str, int]) -> None:
        self.count = int(blob["count"])
        self._apply()
