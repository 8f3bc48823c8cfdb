"""SpCL end to end on tiny generated data: both settings run, log clusters, resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from upreid.data.readers import read_market1501, read_personx
from upreid.eval.evaluate import evaluate
from upreid.params import load_params
from upreid.train import spcl
from upreid.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _params(**kw: object):
    p = load_params(ROOT / "params.yaml", "quick")
    sp = dataclasses.replace(
        p.spcl,
        height=64,
        width=32,
        epochs=2,
        iters_per_epoch=6,
        batch_size=16,
        k=4,
        eval_every=2,
        lr=1e-3,
        k1=8,
        k2=3,
        min_samples=2,
    )
    return dataclasses.replace(sp, **kw), p.eval


def test_source_to_target_run_beats_the_untrained_model(tiny_synth: Path, tmp_path: Path) -> None:
    """P->M from scratch on 12 identities: 120 iterations lift target mAP well above the
    untrained network. Measured 33.0 -> 45.3 (best 45.5) on an AMD EPYC; the curve is noisy on 8
    test identities and the first epoch dips below the start. 80 iterations were enough on an
    Intel Xeon (45.6) but ended at 35.7 on the EPYC (best 42.2): the arithmetic differs by
    processor."""
    target = read_market1501(tiny_synth / "market1501")
    source = read_personx(tiny_synth / "personx")
    sp, ev = _params(epochs=12, iters_per_epoch=10, eval_every=1)
    torch.manual_seed(0)
    before = evaluate(spcl.SpCLNet("resnet18").eval(), target, ev, 64, 32)["mAP"]
    rows: list[dict[str, float]] = []
    result = spcl.adapt(
        sp,
        "resnet18",
        target,
        source,
        "scratch",
        None,
        tmp_path,
        ev,
        seed=0,
        on_metrics=lambda m, s: rows.append(m),
    )
    assert len(rows) == 12 and all("clusters" in r and "outliers" in r for r in rows)
    assert all(r["clusters"] >= 1 for r in rows)
    assert result["source_images"] == len(source.train)
    # the init is evaluated before adapting (the gain the report quotes)
    assert result["init_mAP"] == pytest.approx(before, abs=1e-6)
    assert result["mAP"] > before + 5 and result["best_mAP"] > before + 10, (before, rows)
    assert rows[-1]["mAP"] == result["mAP"]
    assert (tmp_path / "model.pt").is_file()


def test_target_only_run_resumes(tiny_synth: Path, tmp_path: Path) -> None:
    target = read_market1501(tiny_synth / "market1501")
    sp, ev = _params(epochs=2, eval_every=2, iters_per_epoch=3)
    a, b = tmp_path / "a", tmp_path / "b"
    full = spcl.adapt(sp, "resnet18", target, None, "scratch", None, a, ev, 2, image_cache_mb=64)
    assert load_checkpoint(a / "last.pt")["state"]["epoch"] == 1  # none after the final epoch
    assert (a / "model.pt").is_file()

    class Killed(Exception):
        pass

    def kill_in_epoch_2(metrics: dict[str, float], step: int) -> None:
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        spcl.adapt(
            sp, "resnet18", target, None, "scratch", None, b, ev, 2, on_metrics=kill_in_epoch_2
        )
    assert load_checkpoint(b / "last.pt")["state"]["epoch"] == 1
    resumed = spcl.adapt(sp, "resnet18", target, None, "scratch", None, b, ev, 2)
    assert resumed["mAP"] == pytest.approx(full["mAP"], abs=1e-6)
    assert resumed["source_images"] == 0
    wa, wb = (torch.load(d / "model.pt", weights_only=True)["model"] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
