"""The pre-training loop: resume equals uninterrupted, NaN stops cleanly, export loads."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from upreid.data.records import Record
from upreid.experiments import pretrain_variant
from upreid.models.backbone import build_backbone, load_backbone_file
from upreid.params import load_params
from upreid.train import pretrain as loop
from upreid.train.checkpoint import load_checkpoint
from upreid.train.loop import ResumeMismatch, first_items, meta_differences

ROOT = Path(__file__).resolve().parents[2]


def _pp(variant: str = "upreid", **kw: object):
    base = load_params(ROOT / "params.yaml", "quick").pretrain
    pp = pretrain_variant(base, variant)
    small = dict(
        height=32,
        width=16,
        batch_size=8,
        epochs=2,
        queue_size=16,
        hidden_dim=16,
        dim=8,
        workers=0,
        patches=4,
        warmup_epochs=1,
    )
    return dataclasses.replace(pp, **{**small, **kw})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_resume_after_kill_equals_uninterrupted(tiny_pool: list[Record], tmp_path: Path) -> None:
    pp = _pp(checkpoint_every_steps=2)
    full = loop.pretrain(pp, tiny_pool, tmp_path / "full", seed=3)
    assert full["steps"] == 6  # 24 images / batch 8 x 2 epochs
    # a run that dies after 4 steps (mid-epoch 2, right after a step checkpoint) ...
    loop.pretrain(pp, tiny_pool, tmp_path / "cut", seed=3, max_steps=4)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["state"]["step"] == 4
    # ... and is started again with the same arguments
    loop.pretrain(pp, tiny_pool, tmp_path / "cut", seed=3)
    a = _weights(tmp_path / "full" / "checkpoint.pt")
    b = _weights(tmp_path / "cut" / "checkpoint.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_checkpoint_of_other_params_or_seed_is_not_resumed(
    tiny_pool: list[Record], tmp_path: Path
) -> None:
    """A folder holding another run's checkpoint (other params, other seed) is refused with
    the differing keys named, and the file is left as it was; the same run resumes."""
    pp = _pp(checkpoint_every_steps=2, lr_floor=1.0)
    loop.pretrain(pp, tiny_pool, tmp_path / "run", seed=3, max_steps=2)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    before = ckpt.read_bytes()
    other = dataclasses.replace(pp, lr_floor=0.0)
    with pytest.raises(ResumeMismatch, match=r"params\.lr_floor: 1\.0 there, 0\.0 here"):
        loop.pretrain(other, tiny_pool, tmp_path / "run", seed=3)
    with pytest.raises(ResumeMismatch, match=r"seed: 3 there, 4 here"):
        loop.pretrain(pp, tiny_pool, tmp_path / "run", seed=4)
    assert ckpt.read_bytes() == before
    assert loop.pretrain(pp, tiny_pool, tmp_path / "run", seed=3)["steps"] == 6


def test_meta_differences_names_nested_keys_and_skips_missing_ones() -> None:
    saved = {"params": {"lr": 0.1, "crop": [0.8, 1.0], "old": 1}, "seed": 0, "init": "scratch"}
    meta = {"params": {"lr": 0.2, "crop": (0.8, 1.0), "new": 2}, "seed": 0, "init": "moco"}
    assert meta_differences(saved, meta) == [
        "params.lr: 0.1 there, 0.2 here",
        "init: scratch there, moco here",
    ]
    assert meta_differences(saved, {"seed": 0, "extra": 5}) == []  # a key the file lacks
    many = {"params": {f"k{i}": i for i in range(6)}, "seed": 1}
    differ = meta_differences(many, {"params": {f"k{i}": -1 for i in range(6)}, "seed": 2})
    assert len(differ) == 7 and differ[-1] == "seed: 1 there, 2 here"
    assert first_items(differ).endswith("; params.k3: 3 there, -1 here; 3 more")


def test_nan_loss_stops_and_keeps_the_last_checkpoint(
    tiny_pool: list[Record], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pp = _pp("moco", epochs=2)
    loop.pretrain(pp, tiny_pool, tmp_path, seed=0, max_steps=3)  # one epoch: checkpoint at 3
    before = (tmp_path / "checkpoint.pt").read_bytes()
    from upreid.models import moco

    def poisoned(q, k, queue, tau):
        return (q * float("nan")).sum()

    monkeypatch.setattr(moco, "info_nce", poisoned)
    with pytest.raises(loop.NonFiniteLoss, match="last good checkpoint kept"):
        loop.pretrain(pp, tiny_pool, tmp_path, seed=0)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_infinite_gradient_under_a_finite_loss_stops_before_the_step(
    tmp_path: Path,
) -> None:
    """The guard checks the gradient too: one step with an infinite gradient would write it
    into the weights while the loss still looks fine."""
    from upreid.runtime import Runtime
    from upreid.train.loop import NonFiniteLoss, Trainer

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = Trainer("toy", Runtime(torch.device("cpu")), tmp_path / "c.pt", {}, {}, 2, "step")
    x = torch.randn(3, 4)
    trainer.optimize(net(x).square().mean(), opt)  # a sound step goes through
    assert trainer.state.step == 1
    before = net.weight.detach().clone()
    net.weight.register_hook(lambda g: g * float("inf"))
    loss = net(x).square().mean()
    assert torch.isfinite(loss)
    with pytest.raises(NonFiniteLoss, match="toy at step 1 .*the gradient norm is (inf|nan)"):
        trainer.optimize(loss, opt)
    assert torch.equal(net.weight.detach(), before) and trainer.state.step == 1


def test_exported_backbone_loads_and_logs_every_loss(
    tiny_pool: list[Record], tmp_path: Path
) -> None:
    rows: list[tuple[int, dict[str, float]]] = []
    pp = _pp(epochs=1)
    loop.pretrain(pp, tiny_pool, tmp_path, seed=0, on_metrics=lambda m, s: rows.append((s, m)))
    assert [s for s, _ in rows] == [1, 2, 3]
    assert {"loss", "loss_global", "loss_patch", "loss_cc", "lr", "images_per_s"} <= set(rows[0][1])
    trunk = build_backbone(pp.arch)
    weights = load_backbone_file(trunk, tmp_path / "backbone.pt")
    model = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert torch.equal(weights["conv1.weight"], model["online.backbone.conv1.weight"])
    # a public MoCo/LUPerson-style checkpoint (module.encoder_q.*) imports too
    public = {f"module.encoder_q.{k}": v for k, v in trunk.state_dict().items()}
    public["module.encoder_k.conv1.weight"] = torch.zeros(1)
    torch.save({"state_dict": public}, tmp_path / "public.pth")
    other = build_backbone(pp.arch)
    load_backbone_file(other, tmp_path / "public.pth")
    assert torch.equal(other.conv1.weight, trunk.conv1.weight)


def test_lr_schedule_warms_up_then_decays() -> None:
    factors = [loop.lr_factor(s, 2, 10) for s in range(10)]
    assert factors[0] == pytest.approx(0.5) and factors[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))
    assert factors[-1] < 0.05


@pytest.mark.parametrize("floor", [0.0, 0.25, 1.0])
def test_lr_schedule_decays_to_its_floor(floor: float) -> None:
    warmup, total = 3, 13
    for step in range(warmup, total + 2):
        t = min(1.0, (step - warmup) / (total - warmup))
        cosine = (1 + math.cos(math.pi * t)) / 2  # 1 at the warm-up's end, 0 at ``total``
        expected = floor + (1 - floor) * cosine
        assert loop.lr_factor(step, warmup, total, floor) == pytest.approx(expected)
    assert loop.lr_factor(total, warmup, total, floor) == pytest.approx(floor)


def test_two_process_torchrun_keeps_ranks_identical(
    tiny_pool: list[Record], tmp_path: Path
) -> None:
    script = tmp_path / "ddp.py"
    out = tmp_path / "out"
    out.mkdir()
    script.write_text(
        "import os, sys, torch\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from upreid.data.records import Record\n"
        "from upreid.train import pretrain as loop\n"
        "import dataclasses, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('t', {str(Path(__file__))!r})\n"
        "t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)\n"
        f"records = [Record(p, -1, 0) for p in {[r.path for r in tiny_pool]!r}]\n"
        "models, build, cleanup = [], loop.build_model, loop.cleanup\n"
        "def capture(pp, seed):\n"
        "    models.append(build(pp, seed))\n"
        "    return models[-1]\n"
        "def dump():\n"
        "    import torch.distributed as dist\n"
        f"    path = {str(out)!r} + f'/rank{{dist.get_rank()}}.pt'\n"
        "    torch.save(models[0].state_dict(), path)\n"
        "    cleanup()\n"
        "loop.build_model, loop.cleanup = capture, dump\n"
        "from upreid.runtime import build_runtime\n"
        "loop.pretrain(t._pp(epochs=1, batch_size=8), records, "
        f"{str(out)!r}, seed=0, runtime=build_runtime('cpu', 'fp32', False), max_steps=2)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    # weights, EMA weights and queues agree; BN running statistics are per-rank by design
    shared = [
        k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert any(k.startswith("queue") for k in shared) and any("ema." in k for k in shared)
    for key in shared:
        assert torch.equal(a[key], b[key]), key
    assert load_checkpoint(out / "checkpoint.pt")["state"]["step"] == 2
    assert (out / "backbone.pt").is_file()


def test_same_seed_same_run_other_seed_differs(tiny_pool: list[Record], tmp_path: Path) -> None:
    """Determinism on CPU: the same params and seed give the same losses and weights."""
    pp = _pp()
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        logged: list[tuple[int, dict[str, float]]] = []
        loop.pretrain(
            pp,
            tiny_pool,
            tmp_path / name,
            seed=seed,
            max_steps=3,
            on_metrics=lambda m, step, logged=logged: logged.append((step, dict(m))),
        )
        runs[name] = (logged, _weights(tmp_path / name / "checkpoint.pt"))
    (log_a, w_a), (log_b, w_b), (_, w_c) = runs["a"], runs["b"], runs["c"]
    assert log_a and [s for s, _ in log_a] == [s for s, _ in log_b]
    for (_, ma), (_, mb) in zip(log_a, log_b, strict=True):
        assert {k: v for k, v in ma.items() if k != "images_per_s"} == {
            k: v for k, v in mb.items() if k != "images_per_s"
        }
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert not all(torch.equal(w_a[k], w_c[k]) for k in w_a)


def test_frozen_probe_measures_the_untrained_and_each_epoch(
    tiny_pool: list[Record], tiny_synth: Path, tmp_path: Path
) -> None:
    """The probe runs before the first step (the untrained network: ``init_*``), after each
    epoch, logged against the step; a resumed run keeps the step-0 row instead of redoing it,
    and the values equal an evaluation of the exported trunk's pooled features."""
    from upreid.data.readers import read_dataset
    from upreid.eval.evaluate import evaluate
    from upreid.eval.frozen import frozen_probe, pooled
    from upreid.runtime import CPU

    params = load_params(ROOT / "params.yaml", "quick")
    sets = {n: read_dataset(n, tiny_synth / n) for n in ("market1501", "cuhk03")}
    pp = _pp(epochs=2, checkpoint_every_steps=2)
    calls: list[int] = []
    probe = frozen_probe(sets, params.eval, pp.height, pp.width, CPU)

    def counted(trunk: torch.nn.Module) -> dict[str, float]:
        calls.append(1)
        return probe(trunk)

    rows: list[tuple[int, dict[str, float]]] = []
    summary = loop.pretrain(
        pp, tiny_pool, tmp_path / "a", 0, on_metrics=lambda m, s: rows.append((s, m)), probe=counted
    )
    probed = [(s, m) for s, m in rows if "frozen_mAP" in m]
    # 24 images / batch 8; step 0 twice: as initialised and with estimated BN statistics
    assert [s for s, _ in probed] == [0, 3, 6] and len(calls) == 4
    assert {"frozen_mAP_market1501", "frozen_rank1_cuhk03"} <= set(probed[0][1])
    assert "frozen_bnest_mAP_cuhk03" in probed[0][1]
    assert "frozen_bnest_mAP_cuhk03" not in probed[1][1]
    assert summary["init_frozen_mAP"] == probed[0][1]["frozen_mAP"]
    assert summary["init_frozen_bnest_mAP"] == probed[0][1]["frozen_bnest_mAP"]

    assert summary["frozen_mAP_cuhk03"] == probed[-1][1]["frozen_mAP_cuhk03"]
    assert summary["frozen_mAP"] == pytest.approx(
        (summary["frozen_mAP_market1501"] + summary["frozen_mAP_cuhk03"]) / 2
    )
    trunk = build_backbone(pp.arch)
    load_backbone_file(trunk, tmp_path / "a" / "backbone.pt")
    trunk.eval()
    plain = dataclasses.replace(params.eval, rerank=False)
    direct = evaluate(lambda x: pooled(trunk(x)), sets["cuhk03"], plain, pp.height, pp.width)
    assert direct["mAP"] == pytest.approx(summary["frozen_mAP_cuhk03"], abs=1e-4)

    calls.clear()  # the same seed again in this process: the untrained network's rows reused
    loop.pretrain(pp, tiny_pool, tmp_path / "c", 0, max_steps=1, probe=counted)
    assert calls == [] and (tmp_path / "c" / "checkpoint.pt").is_file()
    loop._untrained.clear()  # as in a new process
    loop.pretrain(pp, tiny_pool, tmp_path / "b", 0, max_steps=4, probe=counted)
    assert len(calls) == 3  # step 0 (twice) and the end of epoch 1; the budget ends mid-epoch 2
    resumed: list[tuple[int, dict[str, float]]] = []
    again = loop.pretrain(
        pp,
        tiny_pool,
        tmp_path / "b",
        0,
        on_metrics=lambda m, s: resumed.append((s, m)),
        probe=counted,
    )
    assert len(calls) == 4  # resumed: no second step-0 evaluation ...
    # ... but its record gets the curve measured before the kill (a new MLflow run's history)
    assert [s for s, m in resumed if "frozen_mAP" in m] == [0, 3, 6]
    assert again["init_frozen_mAP"] == summary["init_frozen_mAP"]
    assert again["frozen_mAP"] == summary["frozen_mAP"]


def test_bn_recalibration_on_whole_images(tiny_pool: list[Record], tmp_path: Path) -> None:
    """``bn_recalibrate``: the exported trunk's weights are the trained ones and its BN running
    statistics are the plain average over whole, unaugmented pool images; the live model (and
    so a resumed run) is untouched."""
    from upreid.data.dataset import ImageDataset
    from upreid.data.transforms import test_transform
    from upreid.runtime import CPU

    pp = _pp(bn_recalibrate=1, epochs=1)
    loop.pretrain(pp, tiny_pool, tmp_path / "a", 0)
    exported = torch.load(tmp_path / "a" / "backbone.pt", weights_only=True)["backbone"]
    live = {
        k.removeprefix("online.backbone."): v
        for k, v in _weights(tmp_path / "a" / "checkpoint.pt").items()
        if k.startswith("online.backbone.")
    }
    assert torch.equal(exported["conv1.weight"], live["conv1.weight"])
    assert not torch.allclose(exported["bn1.running_mean"], live["bn1.running_mean"])
    # one batch of whole images, evenly spaced over the pool (8 of 24: every third)
    chosen = [tiny_pool[i * len(tiny_pool) // 8] for i in range(8)]
    x = torch.stack(
        [ImageDataset(chosen, test_transform(pp.height, pp.width))[i][0] for i in range(8)]
    )
    trunk = build_backbone(pp.arch)
    trunk.load_state_dict(live)
    stem = trunk.conv1(x)
    assert torch.allclose(exported["bn1.running_mean"], stem.mean(dim=(0, 2, 3)), atol=1e-5)
    off = dataclasses.replace(pp, bn_recalibrate=0)
    assert loop.recalibrated(trunk, tiny_pool, off, CPU) is trunk


def test_the_untrained_rows_probe_as_initialised_then_with_estimated_statistics(
    tiny_pool: list[Record],
) -> None:
    """``untrained_rows``: the first probe sees BN statistics at the identity, the second
    estimated ones (the mean of the pool images' first-layer responses, not 0), and the trunk
    itself is left as it was."""
    from upreid.runtime import CPU

    pp = _pp(bn_recalibrate=2)
    torch.manual_seed(0)
    trunk = build_backbone(pp.arch).train()
    seen: list[torch.Tensor] = []

    def probe(net: torch.nn.Module) -> dict[str, float]:
        seen.append(
            next(
                m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
            ).running_mean.clone()
        )
        return {"frozen_mAP": float(len(seen))}

    row = loop.untrained_rows(probe, trunk, tiny_pool, pp, CPU)
    assert row == {"frozen_mAP": 1.0, "frozen_bnest_mAP": 2.0}
    assert torch.equal(seen[0], torch.zeros_like(seen[0])) and seen[1].abs().sum() > 0
    first_bn = next(m for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert trunk.training and torch.equal(first_bn.running_mean, torch.zeros_like(seen[0]))
    # the same network again (another run of the seed in this process): measured once
    assert loop.untrained_rows(probe, trunk, tiny_pool, pp, CPU) == row and len(seen) == 2
    other = build_backbone(pp.arch).train()  # another initialisation: measured
    assert loop.untrained_rows(probe, other, tiny_pool, pp, CPU)["frozen_mAP"] == 3.0
    # the same network on other pool images: its estimated statistics differ, so measured again
    assert loop.untrained_rows(probe, trunk, tiny_pool[:-1], pp, CPU)["frozen_mAP"] == 5.0
