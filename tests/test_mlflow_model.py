"""Fine-tuned models are MLflow models: loadable with mlflow.pytorch, registrable by command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from upreid import tracking
from upreid.cli import app
from upreid.export import EmbeddingModel
from upreid.models.checkpoints import load_model
from upreid.units import embedding_model

ROOT = Path(__file__).resolve().parents[1]


def _load(uri: str, tmp_path: Path) -> torch.nn.Module:
    """``mlflow.pytorch.load_model`` downloading into the test's folder: without ``dst_path`` it
    leaves each model's files (44 MB here) in a temporary folder of its own, never removed."""
    import tempfile

    import mlflow.pytorch

    return mlflow.pytorch.load_model(uri, dst_path=tempfile.mkdtemp(dir=tmp_path))


def test_logged_model_embeds_images_and_registers(
    bot_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import mlflow.pytorch

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = bot_checkpoint
    key = "finetune/bot/market1501/upreid/s0"
    with tracking.stage_run(
        key, profile="quick", params={}, tags={}, commit="c", root=tmp_path
    ) as run:
        uri = run.log_model(*embedding_model(path))
        run_id = run.run_id
    mlflow.set_tracking_uri(tracking.tracking_uri(tmp_path))
    model = _load(uri, tmp_path)
    x = torch.randn(3, 3, 32, 16)
    with torch.no_grad():
        want = EmbeddingModel(load_model(path))(x)
        got = model(x)
    assert got.shape == want.shape == (3, want.shape[1]) and torch.allclose(got, want, atol=1e-5)
    info = mlflow.models.get_model_info(uri)
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 3, 32, 16)
    by_run = _load(f"runs:/{run_id}/model", tmp_path)  # the run's model, by run id
    with torch.no_grad():
        assert torch.allclose(by_run(x), want, atol=1e-5)

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    cli = ["--params", str(params), "--profile", "quick", "register", key, "--name", "reid"]
    result = CliRunner().invoke(app, cli)
    assert result.exit_code == 0, result.output
    assert f"run {run_id}) as reid version 1" in result.output
    again = CliRunner().invoke(app, cli)
    assert "version 2" in again.output
    missing = CliRunner().invoke(app, [*cli[:4], "register", "finetune/nope/s0"])
    assert missing.exit_code == 2 and "no finished run" in missing.output


def test_a_unit_logs_its_model_only_when_it_names_one(
    bot_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline's path: a unit with ``model`` (``pipeline.log_models: true``) leaves an
    MLflow model on its run, also when it is re-logged from its folder into a lost store; a unit
    without one (the quick profile) leaves none."""
    import shutil

    import mlflow
    import mlflow.pytorch

    from upreid.units import Unit, ensure_logged, run_unit

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def work(folder: Path, on_metrics: object) -> dict[str, float]:
        shutil.copy(bot_checkpoint, folder / "best.pt")
        return {"mAP": 1.0}

    x = torch.randn(2, 3, 32, 16)
    for model, key in (("best.pt", "finetune/bot/m/a/s0"), ("", "finetune/bot/m/b/s0")):
        unit = Unit(key, tmp_path / "runs" / key, "h", {}, artifacts=("best.pt",), model=model)
        run_unit(unit, work, "t", {"seed": 0}, root=tmp_path)
    mlflow.set_tracking_uri(tracking.tracking_uri(tmp_path))
    runs = tracking.latest_runs("t", tmp_path)
    want = EmbeddingModel(load_model(tmp_path / "runs" / "finetune/bot/m/a/s0" / "best.pt"))
    with torch.no_grad():
        got = _load(f"runs:/{runs['finetune/bot/m/a/s0'].run_id}/model", tmp_path)(x)
        assert torch.allclose(got, want(x), atol=1e-5)
    tags = {k: [t for t in runs[k].tags if t.endswith("model_uri")] for k in runs}
    assert tags == {"finetune/bot/m/a/s0": ["upreid.model_uri"], "finetune/bot/m/b/s0": []}

    # a store without the run (a new project folder: MLflow keeps one engine per database file
    # in a process, so a deleted one would still be read): re-logged, with its model again
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_id, relogged = ensure_logged(tmp_path / "runs" / "finetune/bot/m/a/s0", "t", fresh)
    assert relogged
    mlflow.set_tracking_uri(tracking.tracking_uri(fresh))
    with torch.no_grad():
        assert torch.allclose(_load(f"runs:/{run_id}/model", tmp_path)(x), want(x))
