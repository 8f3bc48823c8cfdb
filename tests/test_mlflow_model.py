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
    model = mlflow.pytorch.load_model(uri)
    x = torch.randn(3, 3, 32, 16)
    with torch.no_grad():
        want = EmbeddingModel(load_model(path))(x)
        got = model(x)
    assert got.shape == want.shape == (3, want.shape[1]) and torch.allclose(got, want, atol=1e-5)
    info = mlflow.models.get_model_info(uri)
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 3, 32, 16)
    by_run = mlflow.pytorch.load_model(f"runs:/{run_id}/model")  # the run's model, by run id
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
