"""A run on a user's dataset (`upreid finetune --data DIR`) builds in its own folder, outside
the stages' outputs (`runs/finetune/METHOD` is stage `finetune@METHOD`'s), and never touches the
pipeline's run of the same method, dataset and init."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from upreid.experiments import FinetuneRun
from upreid.params import load_params
from upreid.steps.finetune import finetune_many

ROOT = Path(__file__).resolve().parents[2]


def test_data_runs_get_their_own_folders(
    tiny_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(ROOT / "params.yaml", "quick")
    bot = dataclasses.replace(params.finetune.bot, epochs=1, eval_every=1)
    params = dataclasses.replace(
        params, finetune=dataclasses.replace(params.finetune, bot=bot), root=tmp_path
    )
    ours = tmp_path / "runs" / "finetune" / "bot" / "market1501" / "scratch-s0"
    ours.mkdir(parents=True)
    (ours / "result.json").write_text(json.dumps({"input_hash": "pipeline", "metrics": {}}))
    (ours / "best.pt").write_bytes(b"the pipeline's weights")
    before = {p.name: p.read_bytes() for p in ours.iterdir()}

    run = FinetuneRun("bot", "market1501", "scratch", params.seed)
    (metrics,) = finetune_many(params, [run], tmp_path, tiny_synth / "market1501")
    assert metrics["mAP"] > 0
    assert {p.name: p.read_bytes() for p in ours.iterdir()} == before  # untouched
    assert [p.name for p in (tmp_path / "runs" / "finetune" / "bot").iterdir()] == ["market1501"]
    (theirs,) = (tmp_path / "runs" / "data" / "bot").glob("market1501@data-*")
    done = json.loads((theirs / "scratch-s0" / "result.json").read_text())
    assert done["key"] == f"{run.key}@{theirs.name.split('@')[1]}"
    assert (theirs / "scratch-s0" / "best.pt").is_file()
    # the same data again: the run is found done, not redone
    again = finetune_many(params, [run], tmp_path, tiny_synth / "market1501")
    assert again == [metrics]


def test_an_imagenet_file_that_does_not_fit_is_refused_before_any_run(
    tiny_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from upreid.models.backbone import build_backbone

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(ROOT / "params.yaml", "quick")
    weights = tmp_path / "imagenet.pth"  # another trunk's file: no layer4
    trunk = build_backbone(params.finetune.arch).state_dict()
    torch.save({k: v for k, v in trunk.items() if not k.startswith("layer4.")}, weights)
    params = dataclasses.replace(
        params,
        finetune=dataclasses.replace(params.finetune, insup_weights=str(weights)),
        root=tmp_path,
    )
    runs = [FinetuneRun("bot", "market1501", i, params.seed) for i in ("scratch", "insup")]
    with pytest.raises(ValueError, match="do not fit .*layer4.*another ResNet"):
        finetune_many(params, runs, tmp_path, tiny_synth / "market1501")
    assert not (tmp_path / "runs").exists()  # scratch did not train first
    weights.unlink()
