"""Fine-tuning: it learns (loss down, mAP far above untrained), resumes, loads any init."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from upreid.data.readers import read_market1501
from upreid.eval.evaluate import evaluate
from upreid.models.backbone import build_backbone
from upreid.params import load_params
from upreid.train import finetune as ft
from upreid.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _params(method: str = "bot", **kw: object):
    p = load_params(ROOT / "params.yaml", "quick")
    mp = dataclasses.replace(
        getattr(p.finetune, method),
        height=64,
        width=32,
        epochs=6,
        eval_every=3,
        p=6,
        k=4,
        warmup_epochs=1,
        milestones=(5,),
        lr=1e-3,
    )
    return dataclasses.replace(mp, **kw), p.eval


# From scratch on 12 identities; MGN and BDB (more heads, more parameters) first dip below the
# untrained features, whose colours already separate people, and need more epochs (measured).
@pytest.mark.parametrize("method,epochs", [("bot", 6), ("mgn", 12), ("bdb", 10), ("pcb", 6)])
def test_each_method_learns_far_above_untrained(
    method: str, epochs: int, tiny_synth: Path, tmp_path: Path
) -> None:
    data = read_market1501(tiny_synth / "market1501")
    mp, ev = _params(method, epochs=epochs, eval_every=1, milestones=(epochs,))
    torch.manual_seed(0)
    untrained = ft.build_model(method, "resnet18", 12, "scratch", None)
    before = evaluate(ft.embedder(untrained), data, ev, mp.height, mp.width)["mAP"]
    rows: list[dict[str, float]] = []
    result = ft.finetune(
        method,
        mp,
        "resnet18",
        data,
        "scratch",
        None,
        tmp_path,
        ev,
        seed=0,
        on_metrics=lambda m, s: rows.append(m),
    )
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"], rows
    assert result["best_mAP"] > before + 10, (before, result)
    model, loaded, h, w = ft.load_finetuned(tmp_path / "best.pt")
    assert loaded == method and (h, w) == (64, 32)
    again = evaluate(ft.embedder(model), data, ev, h, w)["mAP"]
    assert again == pytest.approx(result["best_mAP"], abs=1e-4)


class _Killed(Exception):
    """Stands for a kill in the middle of a run."""


def _kill_at(epoch: int):
    def on_metrics(metrics: dict[str, float], step: int) -> None:
        if step == epoch:
            raise _Killed

    return on_metrics


def test_resume_reaches_the_uninterrupted_result(tiny_synth: Path, tmp_path: Path) -> None:
    data = read_market1501(tiny_synth / "market1501")
    mp, ev = _params("pcb", epochs=3, eval_every=1)
    a, b = tmp_path / "a", tmp_path / "b"
    full = ft.finetune(
        "pcb",
        mp,
        "resnet18",
        data,
        "scratch",
        None,
        a,
        ev,
        1,
        checkpoint_every=2,
        image_cache_mb=64,
    )
    assert load_checkpoint(a / "last.pt")["state"]["epoch"] == 2  # none after the final epoch
    with pytest.raises(_Killed):  # killed in epoch 3: the checkpoint of epoch 2 is there
        ft.finetune(
            "pcb",
            mp,
            "resnet18",
            data,
            "scratch",
            None,
            b,
            ev,
            1,
            on_metrics=_kill_at(3),
            checkpoint_every=2,
        )
    ckpt = load_checkpoint(b / "last.pt")
    assert ckpt["state"]["epoch"] == 2 and len(ckpt["state"]["history"]) == 2
    # best.pt on disk is the best the checkpoint records
    assert load_checkpoint(b / "best.pt")["epoch"] == ckpt["state"]["best"]["epoch"]
    resumed = ft.finetune(
        "pcb", mp, "resnet18", data, "scratch", None, b, ev, 1, checkpoint_every=2
    )
    timing = ("wall_s", "images_per_s")
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in full.items() if k not in timing
    }
    best_a, best_b = load_checkpoint(a / "best.pt"), load_checkpoint(b / "best.pt")
    assert best_a["epoch"] == best_b["epoch"] == full["best_epoch"]
    assert all(torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"])


@pytest.mark.parametrize("method", ["bot", "mgn", "bdb", "pcb"])
def test_initialised_backbone_equals_the_checkpoint(method: str, tmp_path: Path) -> None:
    trunk = build_backbone("resnet18")
    torch.nn.init.normal_(trunk.layer4[0].conv1.weight)
    torch.save({"backbone": trunk.state_dict(), "arch": "resnet18"}, tmp_path / "b.pt")
    model = ft.build_model(method, "resnet18", 5, "upreid", str(tmp_path / "b.pt"))
    own = model.backbone.state_dict()
    for key, value in trunk.state_dict().items():
        assert torch.equal(own[key], value), key
    if method == "mgn":  # every branch starts from the loaded layer4
        for branch in model.branches:
            assert torch.equal(branch[0].conv1.weight, trunk.layer4[0].conv1.weight)
    with pytest.raises(FileNotFoundError, match="run the pre-training stage first"):
        ft.build_model(method, "resnet18", 5, "moco", str(tmp_path / "missing.pt"))


def test_insup_without_file_names_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="put a torchvision ResNet ImageNet"):
        ft.build_model("bot", "resnet18", 5, "insup", str(tmp_path / "r18.pth"))


def test_schedule_warms_up_and_steps() -> None:
    f = [ft.warmup_multistep(e, 2, (4, 6), 0.1) for e in range(8)]
    assert f[0] == pytest.approx(0.1) and f[2] == 1.0 and f[4] == pytest.approx(0.1)
    assert f[7] == pytest.approx(0.01)


def test_a_weights_file_of_another_layout_is_refused_naming_keys(tmp_path: Path) -> None:
    from upreid.models.backbone import load_backbone_file

    r50 = build_backbone("resnet50")
    torch.save(
        {"state_dict": {f"module.encoder_q.{k}": v for k, v in r50.state_dict().items()}},
        tmp_path / "moco_r50.pth",
    )
    with pytest.raises(ValueError, match="shapes differ for .*conv1.weight|layer"):
        load_backbone_file(build_backbone("resnet18"), tmp_path / "moco_r50.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no ResNet trunk weights found"):
        load_backbone_file(build_backbone("resnet18"), tmp_path / "other.pth")
    # a torchvision state dict and the public MoCo layout load, as init file:PATH
    r18 = build_backbone("resnet18")
    torch.save(
        {f"module.encoder_q.{k}": v for k, v in r18.state_dict().items()}, tmp_path / "moco_r18.pth"
    )
    model = ft.build_model("bot", "resnet18", 3, "file", str(tmp_path / "moco_r18.pth"))
    assert torch.equal(model.backbone.conv1.weight, r18.conv1.weight)
