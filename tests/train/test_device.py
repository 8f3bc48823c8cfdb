"""Every loop puts its model and every batch on the runtime's device, and evaluates there.

Checked through the loop's own runtime: each model the loop places gets a hook that fails on
any input or parameter off that device. The ``cuda`` cases run where a GPU is present
(``benchmarks/gpu_check.py`` runs ``pytest -m cuda``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from upreid.data.readers import read_market1501
from upreid.data.records import Record
from upreid.eval import evaluate as ev_module
from upreid.experiments import pretrain_variant
from upreid.params import load_params
from upreid.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)]


@dataclasses.dataclass(frozen=True)
class ProbeRuntime(Runtime):
    """A runtime whose placed models check the device of every input and parameter."""

    seen: list[str] = dataclasses.field(default_factory=list, compare=False)

    def place(self, model: nn.Module) -> nn.Module:
        placed = super().place(model)

        def check(module: nn.Module, args: tuple[Any, ...]) -> None:
            for t in args:
                if isinstance(t, torch.Tensor):
                    assert t.device.type == self.device.type, (type(module).__name__, t.device)
            for p in module.parameters():
                assert p.device.type == self.device.type, (type(module).__name__, p.device)
            self.seen.append(type(module).__name__)

        placed.register_forward_pre_hook(check)
        return placed


def _runtime(device: str) -> ProbeRuntime:
    return ProbeRuntime(torch.device(device), "fp32", True)


@pytest.fixture
def ranking_device(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The devices the evaluation's distance matrices were ranked on."""
    seen: list[str] = []
    original = ev_module.evaluate_ranking

    def probe(distmat: torch.Tensor, *args: Any, **kw: Any) -> Any:
        seen.append(distmat.device.type)
        return original(distmat, *args, **kw)

    monkeypatch.setattr(ev_module, "evaluate_ranking", probe)
    return seen


@pytest.mark.parametrize("device", DEVICES)
def test_finetuning_runs_on_the_runtime_device(
    device: str, tiny_synth: Path, tmp_path: Path, ranking_device: list[str]
) -> None:
    from upreid.train.finetune import finetune

    p = load_params(ROOT / "params.yaml", "quick")
    mp = dataclasses.replace(p.finetune.mgn, height=32, width=16, epochs=1, p=4, k=2)
    rt = _runtime(device)
    finetune(
        "mgn",
        mp,
        "resnet18",
        read_market1501(tiny_synth / "market1501"),
        "scratch",
        None,
        tmp_path,
        p.eval,
        0,
        rt,
    )
    assert rt.seen.count("MGN") > 5  # training batches and evaluation batches
    assert ranking_device == [device]


@pytest.mark.parametrize("device", DEVICES)
def test_spcl_runs_on_the_runtime_device(
    device: str, tiny_synth: Path, tmp_path: Path, ranking_device: list[str]
) -> None:
    from upreid.train.spcl import adapt

    p = load_params(ROOT / "params.yaml", "quick")
    sp = dataclasses.replace(
        p.spcl,
        height=32,
        width=16,
        epochs=1,
        iters_per_epoch=2,
        batch_size=8,
        k=4,
        k1=6,
        k2=2,
        min_samples=2,
    )
    rt = _runtime(device)
    adapt(
        sp,
        "resnet18",
        read_market1501(tiny_synth / "market1501"),
        None,
        "scratch",
        None,
        tmp_path,
        p.eval,
        0,
        rt,
    )
    assert rt.seen.count("SpCLNet") > 4  # init evaluation, memory features, training, eval
    assert ranking_device == [device, device]  # before adaptation and after the epoch


@pytest.mark.parametrize("device", DEVICES)
def test_pretraining_runs_on_the_runtime_device(
    device: str, tiny_pool: list[Record], tmp_path: Path
) -> None:
    from upreid.train.pretrain import pretrain

    base = load_params(ROOT / "params.yaml", "quick").pretrain
    pp = dataclasses.replace(
        pretrain_variant(base, "upreid"),
        height=32,
        width=16,
        batch_size=8,
        epochs=1,
        queue_size=16,
        hidden_dim=16,
        dim=8,
        patches=4,
    )
    rt = _runtime(device)
    pretrain(pp, tiny_pool, tmp_path, 0, rt, max_steps=2)
    assert rt.seen.count("UPReID") == 2
